#!/usr/bin/env bash
# Prepares Wine to run the agent's Windows test binaries (make wine-test):
# installs wine64 and the mingw-w64 compiler when missing, creates and
# initialises the Wine prefix ($WINEPREFIX, default under ~/.cache), and
# installs a stand-in bcryptprimitives.dll that Go's Windows runtime needs and
# Wine 8.0 lacks (see bcryptprimitives.c). Each step is skipped when done, so
# a second run takes well under a second.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"

need=()
for p in wine64 gcc-mingw-w64-x86-64; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "wine: installing ${need[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "wine: missing packages (${need[*]}); run as root or: sudo apt-get install ${need[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The prefix is initialised once; system.reg appears when wineboot is done.
if [ ! -f "$WINEPREFIX/system.reg" ]; then
	echo "wine: creating prefix $WINEPREFIX"
	mkdir -p "$WINEPREFIX"
	"$WINE64" wineboot -i </dev/null >/dev/null 2>&1 || true
	# Wait for wineserver to write the registry out before checking it.
	/usr/lib/wine/wineserver -w
	if [ ! -f "$WINEPREFIX/system.reg" ]; then
		echo "wine: wineboot did not initialise $WINEPREFIX" >&2
		exit 1
	fi
fi

# Wine 8.0 makes prefixes that say Windows 7; Go 1.26 supports Windows 10 and
# later, so the prefix says Windows 10 (build 18362).
if [ ! -f "$WINEPREFIX/.mnguard-win10" ]; then
	echo "wine: setting the prefix to Windows 10"
	"$WINE64" winecfg -v win10 </dev/null >/dev/null 2>&1
	/usr/lib/wine/wineserver -w
	grep -q '^"CurrentMajorVersionNumber"=dword:0000000a' "$WINEPREFIX/system.reg" || {
		echo "wine: winecfg -v win10 did not set Windows 10 in $WINEPREFIX" >&2
		exit 1
	}
	touch "$WINEPREFIX/.mnguard-win10"
fi

# The stand-in DLL is rebuilt when its source changed since it was installed.
dll="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
stamp="$WINEPREFIX/.mnguard-bcryptprimitives.sha256"
sum=$(cat "$here/bcryptprimitives.c" "$here/bcryptprimitives.def" | sha256sum | cut -d' ' -f1)
if [ ! -f "$dll" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
	echo "wine: building bcryptprimitives.dll"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	x86_64-w64-mingw32-gcc -O2 -Wall -Werror -shared -s -nostdlib \
		-o "$tmp/bcryptprimitives.dll" \
		"$here/bcryptprimitives.c" "$here/bcryptprimitives.def" \
		-ladvapi32 -lkernel32 -Wl,--entry,DllMain
	install -m 0644 "$tmp/bcryptprimitives.dll" "$dll"
	echo "$sum" >"$stamp"
fi
