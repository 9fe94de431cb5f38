#!/bin/bash
# The shape of the popular libvirt "hook helper" (VFIO-Tools' qemu hook, copied by most
# passthrough tutorials): it names a per-guest script directory from its own location
# with `$(dirname $0)` (a subshell and a fork) and runs whatever it finds there. For a
# domain without scripts this is all it does.
GUEST_NAME="$1"
HOOK_NAME="$2"
STATE_NAME="$3"
BASEDIR="$(dirname "$0")"
HOOKPATH="$BASEDIR/qemu.d/$GUEST_NAME/$HOOK_NAME/$STATE_NAME"
set -e
if [ -f "$HOOKPATH" ] && [ -s "$HOOKPATH" ] && [ -x "$HOOKPATH" ]; then
    exit 1  # the benchmark only calls it for domains without scripts
elif [ -d "$HOOKPATH" ]; then
    exit 1
fi
