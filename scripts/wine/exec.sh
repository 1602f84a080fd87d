#!/usr/bin/env bash
# A go test -exec wrapper that runs a Windows test binary under Wine:
#   GOOS=windows GOARCH=amd64 CGO_ENABLED=0 go test -exec "$PWD/scripts/wine/exec.sh" ./pkg/
# Give it as an absolute path: go test starts it from the package's directory.
# The prefix must have been prepared by scripts/wine/setup.sh. Wine takes the
# binary's Unix path as it is (it appears as Z:\...); arguments pass through
# and the binary's exit code is returned.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
if [ ! -f "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" ]; then
	echo "wine: $WINEPREFIX is not prepared: run scripts/wine/setup.sh" >&2
	exit 1
fi
exec "$WINE64" "$@"
