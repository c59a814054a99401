#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's packages, for tests/test_ops_prometheus.py.
# Idempotent: does nothing when promtool is already on PATH. Needs root or sudo (CI runs as root).
# The package's service must not start: the tests run their own Prometheus on loopback.
set -euo pipefail

if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
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
# Recommends would bring prometheus-node-exporter, a second service nothing here needs.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null

promtool --version | head -n 1
