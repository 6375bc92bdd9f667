#!/usr/bin/env bash
# Installs the Debian packages keel's tests drive as real peers, when a
# command is missing. Run as root (CI is); otherwise it only reports.
# Each line: a command the tests run (or a file they need, by its path),
# and the package that ships it.
set -euo pipefail

needs=(
	"fio fio"
	"qemu-img qemu-utils"
	"nbdinfo libnbd-bin"
	"nbdcopy libnbd-bin"
	"nbdkit nbdkit"
	"iscsi-test-cu libiscsi-bin"
	"iscsi-inq libiscsi-bin"
	"/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so qemu-block-extra"
	"tgtd tgt"
	"ip iproute2"
	"unshare util-linux"
	"nsenter util-linux"
	"/lib/systemd/systemd systemd"
)

missing=()
for n in "${needs[@]}"; do
	read -r cmd pkg <<<"$n"
	if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -e "$cmd" ]; then
		missing+=("$pkg")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
	echo "test-deps: missing packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packaged daemons (tgt) must not be started on the machine by the install.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
