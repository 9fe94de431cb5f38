#!/bin/bash
# What the benchmark's profile does, as a hand-written hook does it (runs inside the
# guest): the same module loads and sysfs writes, no validation, no journal, no check of
# any result. With NAP=2 it is the tutorial variant that sleeps 2 s after every
# rebinding instead of checking that the device got its driver.
#
#   guest_minimal.sh prepare|release
#
# Uses the guest harness's GPU_VIDEO, GPU_AUDIO, REBAR_DEVICE and REBAR_BAR.
set -u
dev=/sys/bus/pci/devices
nap() { if [ -n "${NAP:-}" ]; then sleep "$NAP"; fi; }
rebind() {  # rebind DEVICE OVERRIDE: '' gives the device back to the driver of its id
    echo "$2" >"$dev/$1/driver_override"
    echo "$1" >"$dev/$1/driver/unbind"
    echo "$1" >/sys/bus/pci/drivers_probe
    nap
}
resize() {  # resize EXPONENT: unbind, write log2(MiB), probe again
    echo "$REBAR_DEVICE" >"$dev/$REBAR_DEVICE/driver/unbind"
    echo "$1" >"$dev/$REBAR_DEVICE/resource${REBAR_BAR}_resize"
    echo "$REBAR_DEVICE" >/sys/bus/pci/drivers_probe
    nap
}
case $1 in
prepare)
    modprobe vfio_pci
    rebind "$GPU_VIDEO" vfio-pci
    rebind "$GPU_AUDIO" vfio-pci
    resize 6  # 64 MiB
    ;;
release)
    resize 3  # 8 MiB
    rebind "$GPU_AUDIO" ''
    rebind "$GPU_VIDEO" ''
    modprobe -r vfio_pci
    ;;
esac
