#!/usr/bin/env bash
# Installs redis-server from Debian's packages, for the shared budget ledger's tests
# (tests/test_ledger_redis.py, tests/test_fleet.py). Idempotent: does nothing when redis-server
# is already on PATH. Needs root or sudo (CI runs as root).
# The package's service must not start: the tests run their own redis-server on loopback.
set -euo pipefail

if command -v redis-server >/dev/null; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    exec sudo "$0" "$@"
fi

# Debian's invoke-rc.d asks /usr/sbin/policy-rc.d whether to start a package's service; exit
# code 101 means "no". Put one in place for the install unless the machine already has one.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi

apt-get update -qq
# No recommends: the tests need the server alone.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null

redis-server --version
