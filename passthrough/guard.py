"""The host guard: refuse to take a device away that the host depends on right now.

A typo in an address (01:00.0 for 03:00.0) must not detach the disk the root filesystem
is on or the network interface the user is logged in through. `force: true` on the step
overrides.
"""

from __future__ import annotations

import os

from .errors import HostError

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from .host import Host


def block_devices(host: Host, address: str) -> list[str]:
    """Block devices (disks and partitions) below a PCI function: nvme0n1, nvme0n1p2, sda1...

    The kernel lists every block device in /sys/class/block, each a link into the device
    tree: one readlink per block device, where a walk of the function's subtree cost each
    device the hook checks some 50 ms under QEMU (and stopped at a depth that USB disks
    exceed). A tree without that directory (a snapshot, which copies no block devices) is
    walked."""
    sysfs = host.sysfs
    if not os.path.isdir(sysfs.where("class/block")):
        return _walked_block_devices(host, address)
    device = sysfs.kernel_path(f"bus/pci/devices/{address}") + "/"
    names = []
    for name in sysfs.listdir("class/block"):
        try:
            link = os.readlink(sysfs.where(f"class/block/{name}"))
        except OSError:
            continue
        if os.path.normpath(os.path.join("/sys/class/block", link)).startswith(device):
            names.append(name)
    return names


def _walked_block_devices(host: Host, address: str) -> list[str]:
    names = []
    for rel_dir, _dirs, files in host.sysfs.walk(f"bus/pci/devices/{address}", depth=8):
        if "dev" in files and host.sysfs.link_name(f"{rel_dir}/subsystem") == "block":
            names.append(rel_dir.rsplit("/", 1)[-1])
    return names


def holders_of(host: Host, names: list[str]) -> list[str]:
    """Device-mapper devices stacked on the given block devices: dm-0 -> /dev/mapper/root."""
    stacked = []
    for dm in host.sysfs.listdir("block"):
        if dm.startswith("dm-") and set(host.sysfs.listdir(f"block/{dm}/slaves")) & set(names):
            stacked.append(dm)
            mapped = host.sysfs.read(f"block/{dm}/dm/name")
            if mapped:
                stacked.append(f"mapper/{mapped}")
    return stacked


def dependencies(host: Host, address: str) -> list[str]:
    """Why the host needs this device now, in words; empty when it does not."""
    reasons = []
    disks = block_devices(host, address)
    if disks:
        nodes = {f"/dev/{name}" for name in disks + holders_of(host, disks)}
        for line in (host.procfs.read("mounts") or "").splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] in nodes:
                reasons.append(f"{fields[1]} is mounted from {fields[0]}")
        for line in (host.procfs.read("swaps") or "").splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] in nodes:
                reasons.append(f"{fields[0]} is active swap")
    for interface in host.sysfs.listdir(f"bus/pci/devices/{address}/net"):
        flags = host.sysfs.read(f"bus/pci/devices/{address}/net/{interface}/flags") or "0"
        if int(flags, 16) & 0x1:  # IFF_UP
            reasons.append(f"network interface {interface} is up")
    return reasons


def check_not_needed(host: Host, address: str, force: bool, verb: str) -> None:
    reasons = dependencies(host, address)
    if not reasons:
        return
    if force:
        host.record(f"host guard overridden (force: true) for {address}", "; ".join(reasons))
        return
    raise HostError(
        f"refusing to {verb} it: the host depends on it now ({'; '.join(reasons)})",
        device=address,
        hint="check the address in the profile (lspci -D); `force: true` on the step overrides",
    )
