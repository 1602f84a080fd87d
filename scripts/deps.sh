#!/usr/bin/env bash
# Installs the Debian packages mnguard builds and tests with, when missing.
set -euo pipefail
need=()
# chromium drives the console's browser tests; fonts-ipafont-gothic gives
# it (and its screenshots) Japanese glyphs. nftables gives the tests of
# segment isolation `nft list ruleset` to compare what the agent left behind.
# postgresql: the store's tests and the replicas' run on throw-away clusters
# (scripts/testpg.sh, internal/testenv); only its programs are used, the
# package's own cluster may stay stopped.
for p in gcc pkg-config libusb-1.0-0-dev iproute2 udev dosfstools fdisk util-linux fusefat oathtool openssl libpam0g-dev pamtester chromium fonts-ipafont-gothic nftables postgresql; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "deps: installing ${need[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing packages (${need[*]}); run as root or: sudo apt-get install ${need[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
go mod download
go mod download -modfile=tools/go.mod 2>/dev/null || (cd tools && go mod download)
