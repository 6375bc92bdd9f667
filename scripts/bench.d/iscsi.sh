#!/usr/bin/env bash
# iSCSI target: keel's target (iscsi/filetarget, the file test backend)
# against tgtd serving a file of the same size, both on loopback, in the
# same run. Prints iscsi-perf 4 KiB random read IOPS at queue depth 32 and
# qemu-img bench 4 KiB write IOPS, and the keel/tgt ratio of each. Then
# the same two figures for keel_iscsi serving a replication-3 keel volume
# (`keel demo`: three keel_server processes on this machine), filled with
# the same data first, with its ratio to tgt's file.
set -euo pipefail
cd "$(dirname "$0")/../.."
for t in iscsi-perf qemu-img tgtd tgtadm; do
	command -v "$t" >/dev/null || { echo "iscsi bench: $t not installed, skipped"; exit 0; }
done
SIZE=${ISCSI_BENCH_SIZE:-1G}
SECS=${ISCSI_BENCH_SECONDS:-10}
keel=${KEEL_BINARY:-bin/keel}
work=$(mktemp -d /var/tmp/keel-bench-iscsi.XXXXXX)
pids=()
demo_pid=
cleanup() {
	# tgtd ignores SIGTERM while it has targets: both peers are disposable.
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	[ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Same kind of file for both: a fully written file of SIZE.
for f in keel tgt; do
	dd if=/dev/urandom of="$work/$f.img" bs=1M count=$(( $(numfmt --from=iec "$SIZE") >> 20 )) status=none
done

go build -o "$work/filetarget" ./iscsi/filetarget
kport=$(freeport)
kiqn=iqn.2024-01.io.keel:bench
"$work/filetarget" -file "$work/keel.img" -listen "127.0.0.1:$kport" -iqn "$kiqn" >"$work/keel.log" 2>&1 &
pids+=($!)

tport=$(freeport)
ctl=$(( (RANDOM % 20000) + 1000 ))
tiqn=iqn.2024-01.io.keel:tgtbench
tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$tport" >"$work/tgtd.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do tgtadm -C "$ctl" --lld iscsi --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$tiqn"
tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$work/tgt.img"
tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I 127.0.0.1
sleep 0.3

perf() { # URL -> IOPS of 4 KiB random reads at QD32
	iscsi-perf -m 32 -b 8 -t "$SECS" -r "$1" 2>&1 | tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}'
}
wbench() { # URL -> IOPS of 4 KiB writes, depth 32
	local out
	out=$(qemu-img bench -w -f raw -c 100000 -d 32 -s 4k -S 4k -t none "$1" 2>&1)
	echo "$out" | awk '/Run completed in/ {print int(100000 / $(NF-1))}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

kr=$(perf "iscsi://127.0.0.1:$kport/$kiqn/0")
tr=$(perf "iscsi://127.0.0.1:$tport/$tiqn/1")
echo "iscsi-perf 4KiB randread QD32 IOPS: keel $kr  tgt $tr  ratio $(ratio "$kr" "$tr")"
if qemu-img --help | grep -q ' iscsi '; then
	kw=$(wbench "iscsi://127.0.0.1:$kport/$kiqn/0")
	tw=$(wbench "iscsi://127.0.0.1:$tport/$tiqn/1")
	echo "qemu-img bench -w 4KiB QD32 IOPS:    keel $kw  tgt $tw  ratio $(ratio "$kw" "$tw")"
else
	echo "qemu-img bench: no iscsi driver (apt-get install qemu-block-extra), skipped"
fi

# A replication-3 keel volume served by keel_iscsi (keel demo).
[ -x "$keel" ] || { echo "keel volume: $keel not built (make build), skipped"; exit 0; }
"$keel" demo --dir "$work/demo" --size "$SIZE" >"$work/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 1 240); do
	[ -f "$work/demo/demo.env" ] && break
	kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.log" >&2; exit 1; }
	sleep 0.5
done
[ -f "$work/demo/demo.env" ] || { echo "keel demo did not start" >&2; cat "$work/demo.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$work/demo/demo.env"
qemu-img convert -n -f raw -O raw "$work/keel.img" "$KEEL_ISCSI_URL"
vr=$(perf "$KEEL_ISCSI_URL")
echo "iscsi-perf 4KiB randread QD32 IOPS: keel volume (repl 3) $vr  tgt file $tr  ratio $(ratio "$vr" "$tr")"
if qemu-img --help | grep -q ' iscsi '; then
	vw=$(wbench "$KEEL_ISCSI_URL")
	echo "qemu-img bench -w 4KiB QD32 IOPS:    keel volume (repl 3) $vw  tgt file $tw  ratio $(ratio "$vw" "$tw")"
fi
