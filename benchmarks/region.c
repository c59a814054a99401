/* Lets benchmarks/overhead.py --instructions count one region from inside the process.
 *
 * Python runs under `valgrind --tool=callgrind --instr-atstart=no`: nothing is counted until
 * region_start(), which zeroes the counters and turns instrumentation on; region_stop() turns it
 * off again and writes the counts so far to a dump file whose description is `label`. The
 * benchmark builds this with `gcc -O2 -shared -fPIC` and calls it through ctypes.
 */
#include <valgrind/callgrind.h>

void region_start(void) {
    CALLGRIND_ZERO_STATS;
    CALLGRIND_START_INSTRUMENTATION;
}

void region_stop(const char *label) {
    CALLGRIND_STOP_INSTRUMENTATION;
    CALLGRIND_DUMP_STATS_AT(label);
}

int running_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
