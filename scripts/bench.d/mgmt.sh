#!/usr/bin/env bash
# mgmt: VolumeCreate calls per second on 1 and on 3 voters (real keel_mgmt
# processes on loopback, 32 concurrent callers) and VolumesList latency
# with 10,000 volumes and 1,000 snapshots, each beside plain SQLite doing
# the same in the same run (one durable transaction per insert; one SELECT
# encoded as JSON). Goals: > 500 creates/s on one voter, list < 200 ms.
# KEEL_BENCH_TIME (default 5s) sets the length of each create run.
set -euo pipefail
cd "$(dirname "$0")/../.."
KEEL_BENCH=1 go test -count=1 -timeout 20m -run '^TestMgmtBench$' ./mgmt/ -v 2>&1 | grep -E '^(mgmt |--- FAIL|FAIL|panic)' || { echo "mgmt benchmark failed" >&2; exit 1; }
