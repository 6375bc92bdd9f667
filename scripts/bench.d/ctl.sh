#!/usr/bin/env bash
# keel_ctl: reading the state of three services and restarting one, against
# systemctl doing the same on the same test systemd (booted in its own
# namespaces by internal/systemdtest) in the same run. Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
KEEL_BENCH=1 go test -count=1 -run '^TestCtlBench$' ./ctl/ -v 2>&1 | grep -E '^(status|restart|--- FAIL|--- SKIP|FAIL|panic)' || { echo "ctl benchmark failed" >&2; exit 1; }
