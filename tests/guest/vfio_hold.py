"""Hold a PCI function through VFIO exactly as QEMU does (run inside the guest), until killed.

    python3 vfio_hold.py GROUP ADDRESS READY_FILE

Opens the container /dev/vfio/vfio, opens the group, puts the group in the container
(VFIO_GROUP_SET_CONTAINER), selects the type1 IOMMU (VFIO_SET_IOMMU) and takes the device
fd (VFIO_GROUP_GET_DEVICE_FD). While this process lives, unbinding the device from
vfio-pci waits in the kernel (vfio_unregister_group_dev). Writes "holding <device fd>" to
READY_FILE once it holds the device, then sleeps until a signal ends it.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import sys

# linux/vfio.h: _IO(VFIO_TYPE, VFIO_BASE + n), VFIO_TYPE ';', VFIO_BASE 100.
VFIO_GET_API_VERSION = (ord(";") << 8) | 100
VFIO_CHECK_EXTENSION = (ord(";") << 8) | 101
VFIO_SET_IOMMU = (ord(";") << 8) | 102
VFIO_GROUP_SET_CONTAINER = (ord(";") << 8) | 104
VFIO_GROUP_GET_DEVICE_FD = (ord(";") << 8) | 106
VFIO_API_VERSION = 0
VFIO_TYPE1_IOMMU = 1


def hold(group: str, address: str) -> int:
    container = os.open("/dev/vfio/vfio", os.O_RDWR)
    if fcntl.ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION:
        raise SystemExit("unknown VFIO API version")
    if not fcntl.ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU):
        raise SystemExit("no type1 IOMMU")
    group_fd = os.open(f"/dev/vfio/{group}", os.O_RDWR)
    fcntl.ioctl(group_fd, VFIO_GROUP_SET_CONTAINER, struct.pack("i", container))
    fcntl.ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU)
    # A mutable buffer: ioctl then returns the call's result, the new device fd.
    return fcntl.ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, bytearray(address.encode() + b"\0"))


def main(group: str, address: str, ready: str) -> int:
    device = hold(group, address)
    with open(ready, "w") as handle:
        handle.write(f"holding {device}\n")
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
