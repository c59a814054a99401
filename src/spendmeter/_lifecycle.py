"""How a process's telemetry ends: spans flushed first, the spend summary last, also when the
process is stopped by SIGTERM or leaves as a multiprocessing worker does (DESIGN.md section 6).

A normal exit (``sys.exit``, an uncaught exception, the end of the program) needs nothing here:
the SDK providers shut down at exit and ``SpendSummaryReader`` flushes the spans before it
prints. Two ways of ending skip those exit handlers, and :func:`install` covers both, once per
process:

- **SIGTERM** (how containers and process managers stop a process): when the app has no
  handler of its own, spendmeter's shuts the providers down, then re-raises SIGTERM with the
  default handler, so the process ends with the same status as it would have.
- **multiprocessing workers started by fork** leave through ``os._exit``, past every exit
  handler; their multiprocessing finalizers do run, and one shuts the providers down.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import signal
import threading
import weakref
from types import FrameType
from typing import Any

from opentelemetry import metrics, trace

from spendmeter._guard import Guard

logger = logging.getLogger("spendmeter")

# How long a SIGTERM may wait for the shutdown (exports included) before the process ends
# anyway; docker stop, for one, sends SIGKILL 10 s after SIGTERM.
SIGTERM_SHUTDOWN_S = 8.0

# Tracer providers spendmeter was asked to use besides the global one: a shutdown must reach
# them too when the app shut nothing down itself.
_tracer_providers: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_install_lock = threading.Lock()


class _WorkerHook:
    """The key of spendmeter's multiprocessing after-fork callback (held weakly there)."""


_WORKER_HOOK = _WorkerHook()

_FLUSHING = Guard("flushing spans before the spend summary")
_SHUTTING_DOWN = Guard("shutting telemetry down")


def track_tracer_provider(provider: Any) -> None:
    """Flush and shut ``provider`` down with the global one (it may not be the global one)."""
    if provider is not None:
        _tracer_providers.add(provider)


def _tracer_providers_now() -> list[Any]:
    providers = [trace.get_tracer_provider()]
    providers += [p for p in list(_tracer_providers) if p is not providers[0]]
    return providers


def flush_spans(timeout_millis: float) -> None:
    """Export every span ended so far, so that the summary printed next comes after them."""
    for provider in _tracer_providers_now():
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is not None:
            with _FLUSHING:
                force_flush(int(timeout_millis))


def shutdown_telemetry() -> None:
    """Shut down the tracer providers (their spans exported), then the meter provider and the
    summary readers, should theirs not be the global one (the summary printed last)."""
    from spendmeter.summary import live_readers

    meter_provider = metrics.get_meter_provider()
    for provider in [*_tracer_providers_now(), meter_provider, *live_readers()]:
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            with _SHUTTING_DOWN:
                shutdown()


def install() -> None:
    """Cover SIGTERM and multiprocessing fork workers in this process; idempotent."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    _take_sigterm()
    multiprocessing.util.register_after_fork(_WORKER_HOOK, _finalize_in_worker)


def _take_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set a signal handler
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the app's own handler (or SIG_IGN) decides what SIGTERM does
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM while the providers shut down ends the process at once.
    signal.signal(signum, signal.SIG_DFL)
    # On a thread of its own, and waited for a bounded time: the main thread was interrupted
    # at an arbitrary point and may hold a lock that the shutdown needs.
    worker = threading.Thread(target=shutdown_telemetry, name="spendmeter-sigterm", daemon=True)
    worker.start()
    worker.join(SIGTERM_SHUTDOWN_S)
    if worker.is_alive():
        logger.warning(
            "spendmeter: telemetry did not shut down within %g s of SIGTERM", SIGTERM_SHUTDOWN_S
        )
    signal.raise_signal(signum)


def _finalize_in_worker(_key: object) -> None:
    """In a new multiprocessing worker: shut telemetry down when the worker ends. A
    multiprocessing finalizer runs before the worker's ``os._exit``; exit handlers do not."""
    multiprocessing.util.Finalize(None, shutdown_telemetry, exitpriority=0)
