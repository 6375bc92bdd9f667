#!/usr/bin/env bash
# Block client over NBD: fio (nbd engine, 1 job) against a keel volume
# (replication 3, three keel_server processes and the client on this
# machine, started by `keel demo`) and, in the same run, against nbdkit's
# file plugin serving a file of the same size: 4 KiB random read and write
# at queue depth 32 and 1 MiB sequential write. Prints each figure, the
# keel/nbdkit ratio (goals: 0.8 random read, 0.4 random write, 0.3
# sequential write), the CPU time per operation of keel's processes
# together, and the peak memory (VmHWM) of every keel process.
# Each workload runs KEEL_BENCH_ROUNDS times (default 3), keel and nbdkit
# alternating; the figures are the medians, the ratio is the ratio of the
# medians, and the range is that of the ratios of the single rounds: one
# run of either varies by a quarter on a shared machine.
# KEEL_BENCH_TIME (default 20) is the length of each fio run in seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
keel=${KEEL_BINARY:-bin/keel}
t=${KEEL_BENCH_TIME:-20}
rounds=${KEEL_BENCH_ROUNDS:-3}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "client.sh: KEEL_BENCH_ROUNDS must be a whole number of at least 1, not '$rounds'" >&2; exit 2; }
size=4G
work=$(mktemp -d /var/tmp/keel-bench-client.XXXXXX)
demo_pid= nbdkit_pid=
cleanup() {
	[ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null || true
	[ -n "$nbdkit_pid" ] && kill "$nbdkit_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

"$keel" demo --dir "$work/demo" --size "$size" >"$work/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 1 120); do
	[ -f "$work/demo/demo.env" ] && break
	kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.log" >&2; exit 1; }
	sleep 0.5
done
[ -f "$work/demo/demo.env" ] || { echo "keel demo did not start" >&2; cat "$work/demo.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$work/demo/demo.env"

truncate -s "$size" "$work/peer.img"
nbdkit -U "$work/nbdkit.sock" -P "$work/nbdkit.pid" -f file "$work/peer.img" &
nbdkit_pid=$!
for _ in $(seq 1 50); do [ -S "$work/nbdkit.sock" ] && break; sleep 0.1; done

# cputicks: user+system clock ticks of every keel process, summed
cputicks() {
	local pid sum=0
	for pid in $KEEL_MGMT_PIDS $KEEL_SERVER_PIDS $KEEL_CLIENT_PIDS; do
		sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$sum"
}

# run URI RW BS: prints IOPS (random) or MiB/s (sequential), then the
# operations fio completed
run() {
	local out
	out=$(fio --name=b --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth=32 --numjobs=1 \
		--size="$size" --runtime="$t" --time_based --group_reporting --output-format=json 2>"$work/fio.err") || { cat "$work/fio.err" >&2; return 1; }
	python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]
op = "read" if sys.argv[1].endswith("read") else "write"
print(j[op]["iops"] if sys.argv[2] == "4k" else j[op]["bw"] / 1024, j[op]["total_ios"])' "$2" "$3" <<<"$out"
}

keel_uri=$KEEL_NBD_UNIX_URI
peer_uri="nbd+unix:///?socket=$work/nbdkit.sock"
# Fill the region the random reads touch, on both, so reads return data.
fio --name=fill --ioengine=nbd --uri="$keel_uri" --rw=write --bs=1m --iodepth=8 --size=1G >/dev/null 2>&1
fio --name=fill --ioengine=nbd --uri="$peer_uri" --rw=write --bs=1m --iodepth=8 --size=1G >/dev/null 2>&1
# Write both back before measuring, so that neither run pays for the
# write-back of a fill.
sync

# CPU per operation (all keel processes, from /proc/PID/stat around its
# runs) is steadier than the rates.
printf '%-26s %14s %14s %8s %6s %14s %12s\n' "workload (${t}s, QD32)" keel nbdkit ratio goal "keel CPU/op" "ratio range"
for w in "randread 4k 0.8 IOPS" "randwrite 4k 0.4 IOPS" "write 1m 0.3 MiB/s"; do
	read -r rw bs goal unit <<<"$w"
	ks=() ps=() kops=0 ticks=0
	for _ in $(seq 1 "$rounds"); do
		# Each run starts with nothing dirty, so that none pays for the
		# write-back of the run before it (the other system's, mostly).
		sync
		c0=$(cputicks)
		kout=$(run "$keel_uri" "$rw" "$bs")
		c1=$(cputicks)
		sync
		pout=$(run "$peer_uri" "$rw" "$bs")
		read -r k n <<<"$kout"
		read -r p _ <<<"$pout"
		ks+=("$k") ps+=("$p") kops=$((kops + n)) ticks=$((ticks + c1 - c0))
	done
	python3 -c '
import os, statistics, sys
rw, bs, unit, goal, kops, ticks, ks, ps = sys.argv[1:]
ks, ps = [float(x) for x in ks.split()], [float(x) for x in ps.split()]
k, p = statistics.median(ks), statistics.median(ps)
ratios = [a / b for a, b in zip(ks, ps) if b]
us = int(ticks) * 1e6 / os.sysconf("SC_CLK_TCK") / max(int(kops), 1)
print("%-26s %14s %14s %8.2f %6s %11.0f us %12s" % (rw + " " + bs + " (" + unit + ")", "%.0f" % k, "%.0f" % p,
      k / p if p else 0, goal, us, "%.2f-%.2f" % (min(ratios), max(ratios)) if ratios else "-"))' \
		"$rw" "$bs" "$unit" "$goal" "$kops" "$ticks" "${ks[*]}" "${ps[*]}"
done

echo "peak memory (VmHWM) of the keel processes:"
for role in MGMT SERVER CLIENT; do
	var=KEEL_${role}_PIDS
	for pid in ${!var}; do
		printf '  keel_%-8s pid %-8s %s\n' "${role,,}" "$pid" "$(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")"
	done
done
