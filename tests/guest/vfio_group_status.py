"""Print the status of a VFIO group as the kernel reports it (run inside the guest).

    python3 vfio_group_status.py GROUP   ->   "viable container_set=no", "not-viable ..."

A group is viable when every device in it is bound to vfio (or to no driver), which
is what QEMU needs before it can assign any of them: the driver links alone do not
prove the kernel agrees.  Exit 2 when /dev/vfio/GROUP cannot be opened.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys

# linux/vfio.h: VFIO_GROUP_GET_STATUS = _IO(VFIO_TYPE, VFIO_BASE + 3), VFIO_TYPE ';', VFIO_BASE 100.
VFIO_GROUP_GET_STATUS = (ord(";") << 8) | (100 + 3)
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1
STATUS = struct.Struct("=II")  # struct vfio_group_status { __u32 argsz; __u32 flags; }


def group_flags(group: str) -> int:
    fd = os.open(f"/dev/vfio/{group}", os.O_RDWR)
    try:
        status = bytearray(STATUS.pack(STATUS.size, 0))
        fcntl.ioctl(fd, VFIO_GROUP_GET_STATUS, status, True)
        return STATUS.unpack(status)[1]
    finally:
        os.close(fd)


def main(group: str) -> int:
    try:
        flags = group_flags(group)
    except OSError as exc:
        print(f"cannot-open /dev/vfio/{group}: {exc.strerror}")
        return 2
    viable = "viable" if flags & VFIO_GROUP_FLAGS_VIABLE else "not-viable"
    container = "yes" if flags & VFIO_GROUP_FLAGS_CONTAINER_SET else "no"
    print(f"{viable} container_set={container}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
