#!/bin/bash
# The baseline the hook's timings are measured against (run inside the guest): the
# module loads and sysfs writes of the seed-like profile done the way a tutorial's bash
# hook does them, with no validation, no journal, no checks of the result.
#
#   bare_rebind.sh prepare DEVICE...                  load vfio, then each DEVICE -> vfio-pci
#   bare_rebind.sh release DEVICE... -- MODULE...     each DEVICE -> its own driver, unload MODULEs
#
# Prints "modules SECONDS" and "sysfs SECONDS": the time of each phase.
set -u
phase=$1
shift
devices=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do devices+=("$1"); shift; done
[ $# -gt 0 ] && shift
unload=("$@")
sysfs=/sys/bus/pci

elapsed() {  # elapsed START END: seconds between two $EPOCHREALTIME values
    local us=$((10#${2/./} - 10#${1/./}))
    printf '%d.%06d\n' $((us / 1000000)) $((us % 1000000))
}

rebind() {  # rebind DEVICE OVERRIDE: '' gives the device back to the driver of its id
    echo "$2" >"$sysfs/devices/$1/driver_override"
    echo "$1" >"$sysfs/devices/$1/driver/unbind"
    echo "$1" >"$sysfs/drivers_probe"
}

start=$EPOCHREALTIME
if [ "$phase" = prepare ]; then
    modprobe vfio
    modprobe vfio_iommu_type1
    modprobe vfio_pci
    modules_done=$EPOCHREALTIME
    for d in "${devices[@]}"; do rebind "$d" vfio-pci; done
    sysfs_done=$EPOCHREALTIME
    modules_seconds=$(elapsed "$start" "$modules_done")
    sysfs_seconds=$(elapsed "$modules_done" "$sysfs_done")
else
    for d in "${devices[@]}"; do rebind "$d" ''; done
    sysfs_done=$EPOCHREALTIME
    modprobe -r -q "${unload[@]}"
    modules_done=$EPOCHREALTIME
    sysfs_seconds=$(elapsed "$start" "$sysfs_done")
    modules_seconds=$(elapsed "$sysfs_done" "$modules_done")
fi
echo "modules $modules_seconds"
echo "sysfs $sysfs_seconds"
