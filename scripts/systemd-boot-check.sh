#!/usr/bin/env bash
# Boots a Debian container with systemd (systemd-nspawn, no network of its own)
# and runs internal/demo/cmd/unitcheck in it: the units in systemd/ start, run
# as a dynamic user with only CAP_NET_BIND_SERVICE, carry checked transfers
# (one server on port 999), and stop with exit status 0.
#
#   sudo scripts/systemd-boot-check.sh          # or: make systemd-check
#
# Needs root, and Debian's debootstrap and systemd-container packages (installed
# if missing). The container's root file system is built once with debootstrap
# (a few minutes) and kept in $ROOTFS for later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTFS=${ROOTFS:-/var/tmp/smuxtun-nspawn-root}

if [ "$(id -u)" != 0 ]; then
	echo "systemd-boot-check: needs root (systemd-nspawn, debootstrap)" >&2
	exit 2
fi
missing=()
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x "$ROOTFS/lib/systemd/systemd" ]; then
	echo "systemd-boot-check: building the container in $ROOTFS (debootstrap)"
	rm -rf "$ROOTFS"
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$ROOTFS" http://deb.debian.org/debian >/dev/null
fi

GO=${GO:-go}
CGO_ENABLED=0 $GO build -trimpath -o "$ROOTFS/usr/local/bin/smuxtun-server" ./cmd/server
CGO_ENABLED=0 $GO build -trimpath -o "$ROOTFS/usr/local/bin/smuxtun-client" ./cmd/client
CGO_ENABLED=0 $GO build -trimpath -o "$ROOTFS/usr/local/bin/smuxtun-unitcheck" ./internal/demo/cmd/unitcheck
install -m 644 systemd/*.service "$ROOTFS/etc/systemd/system/"
install -d "$ROOTFS/usr/local/share/smuxtun" "$ROOTFS/results"
install -m 644 systemd/server.json systemd/client.json "$ROOTFS/usr/local/share/smuxtun/"
rm -rf "$ROOTFS/etc/smuxtun"

# A boot-time oneshot runs the check, leaves its output in /results and powers off.
cat > "$ROOTFS/etc/systemd/system/smuxtun-unitcheck.service" <<'UNIT'
[Unit]
Description=check the smuxtun units
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c '/usr/local/bin/smuxtun-unitcheck > /results/output 2>&1; echo $? > /results/status'
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=default.target
UNIT
mkdir -p "$ROOTFS/etc/systemd/system/default.target.wants"
ln -sf /etc/systemd/system/smuxtun-unitcheck.service "$ROOTFS/etc/systemd/system/default.target.wants/"

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
# --register=no --keep-unit: works without a service manager or bus on the host.
timeout 300 systemd-nspawn -q --register=no --keep-unit --private-network \
	-D "$ROOTFS" --bind="$results:/results" -b >"$results/boot.log" 2>&1 || true
if [ ! -f "$results/status" ]; then
	echo "systemd-boot-check: the check did not run; the container's console:" >&2
	tail -40 "$results/boot.log" >&2
	exit 1
fi
cat "$results/output"
exit "$(cat "$results/status")"
