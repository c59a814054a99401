#!/usr/bin/env bash
# Installs a server the tests run for real, from Debian's packages:
#   scripts/install-server.sh PACKAGE COMMAND...
# e.g. `prometheus prometheus promtool` (tests/test_ops_prometheus.py) or
# `redis-server redis-server` (the shared budget ledger's tests). Idempotent: does nothing when
# every COMMAND is already on PATH. Needs root or sudo (CI runs as root). The package's service
# must not start: the tests run their own server on loopback.
set -euo pipefail

package=$1
shift
missing=0
for command in "$@"; do
    command -v "$command" >/dev/null || missing=1
done
[ "$missing" -eq 1 ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
    exec sudo "$0" "$package" "$@"
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
# No recommends: the tests need the server alone (Prometheus would bring node-exporter).
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null

"$1" --version
