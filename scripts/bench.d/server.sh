#!/usr/bin/env bash
# Storage server: 4 KiB random reads and writes at queue depth 32 over keel's
# data protocol against one keel_server with one file-backed disk, and plain
# pread/pwrite on a file of the same size in the same run. Prints both, the
# ratio (goals: 0.7 reads, 0.5 writes) and CPU time per operation.
# KEEL_BENCH_TIME (default 5s) sets the length of each run.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The test runs in ./server: a relative binary path must not reach it.
KEEL_BINARY=$(realpath "${KEEL_BINARY:-bin/keel}")
export KEEL_BINARY
KEEL_BENCH=1 go test -count=1 -run '^TestLoadBench$' ./server/ -v 2>&1 | grep -E '^(4k random|--- FAIL|FAIL|panic)' || { echo "server benchmark failed" >&2; exit 1; }
