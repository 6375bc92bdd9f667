#!/usr/bin/env bash
# What the data path's costs rest on, on this machine (no goal; printed so
# the other figures can be read beside it): a system call, a wake-up of a
# thread sleeping on a socket, and a 4 KiB buffered overwrite into a file
# filled with 1 MiB and with 4 KiB writes. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
go run ./internal/wakecost -dir /var/tmp
