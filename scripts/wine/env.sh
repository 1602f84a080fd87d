# Sourced by setup.sh and exec.sh: the Wine prefix and environment both use.
# WINEPREFIX may be set by the caller; the default is a per-user cache
# directory that outlives the work tree, so setup runs once per machine.
: "${MNGUARD_WINE_CACHE:=${XDG_CACHE_HOME:-${HOME:-/var/tmp}/.cache}/mnguard-wine}"
: "${WINEPREFIX:=$MNGUARD_WINE_CACHE/prefix}"
export WINEPREFIX
export WINEARCH=win64
# No debug channels (MNGUARD_WINEDEBUG=fixme+all,err+all shows Wine's own
# complaints when a test fails), no Mono/Gecko install prompts, and never an
# X display.
export WINEDEBUG="${MNGUARD_WINEDEBUG:--all}"
export WINEDLLOVERRIDES="mscoree,mshtml=${WINEDLLOVERRIDES:+;$WINEDLLOVERRIDES}"
unset DISPLAY WAYLAND_DISPLAY
WINE64=/usr/lib/wine/wine64
