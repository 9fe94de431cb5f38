"""Which processes hold a PCI device open.

Unbinding a GPU that a process still uses blocks in the kernel until that process lets
go, which hangs the hook and libvirt with it. So before unbinding, and when a step times
out, this names the holders: open files on the device's nodes (/dev/dri/card* and
renderD*, /dev/nvidia*, /dev/snd/* of its sound card, /dev/vfio/<group>) and mmaps of its
sysfs resource files, read from <root>/proc/<pid>/fd and maps.
"""

from __future__ import annotations

from .record import record

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from .host import Host

SOUND_NODES = ("controlC", "pcmC", "hwC", "midiC")  # and a card number


@record(frozen=True)
class Holder:
    pid: int
    command: str
    path: str
    kind: str  # drm, nvidia, sound, vfio, mmap

    def describe(self, address: str) -> str:
        return f"{self.command} (pid {self.pid}) holds {self.path} of {address}"


def is_sound_node(name: str) -> bool:
    """controlC0, pcmC0D3p, hwC0D0, midiC1D0: a node of an ALSA card."""
    return any(name.startswith(p) and name[len(p) : len(p) + 1].isdecimal() for p in SOUND_NODES)


def device_nodes(host: Host, address: str) -> dict[str, str]:
    """/dev paths that belong to the device -> their kind."""
    sysfs = host.sysfs
    rel = f"bus/pci/devices/{address}"
    nodes: dict[str, str] = {}
    for name in sysfs.listdir(f"{rel}/drm"):
        if name.startswith(("card", "renderD")):
            nodes[f"/dev/dri/{name}"] = "drm"
    for card in sysfs.listdir(f"{rel}/sound"):
        for name in sysfs.listdir(f"{rel}/sound/{card}"):
            if is_sound_node(name):
                nodes[f"/dev/snd/{name}"] = "sound"
    group = sysfs.link_name(f"{rel}/iommu_group")
    if group:
        nodes[f"/dev/vfio/{group}"] = "vfio"
    return nodes


def open_files(host: Host) -> list[tuple[int, list[str], list[str]]]:
    """(pid, open file targets, mapped sysfs files) of every process. Read once per step
    (the runner empties host.step_cache before each): a step checks every device it
    unbinds, and a /proc scan costs about 1.4 ms per hundred processes."""
    cached = host.step_cache.get("open_files")
    if cached is not None:
        return cached
    procfs = host.procfs
    table = []
    for pid in sorted((p for p in procfs.listdir() if p.isdigit()), key=int):
        maps = procfs.read(f"{pid}/maps")
        if maps == "":
            # No memory map at all: a kernel thread (most of the processes listed), or a
            # zombie; neither has open files, so their fd directories are not read.
            continue
        maps = maps or ""  # None: unreadable (the process just exited); its fds are read
        targets = [
            t for t in (procfs.link(f"{pid}/fd/{fd}") for fd in procfs.listdir(f"{pid}/fd")) if t
        ]
        mapped = [
            line.split(None, 5)[5]
            for line in maps.splitlines()
            if "/sys/" in line and len(line.split(None, 5)) == 6
        ]
        table.append((int(pid), targets, mapped))
    host.step_cache["open_files"] = table
    return table


def find_holders(host: Host, address: str) -> list[Holder]:
    nodes = device_nodes(host, address)
    nvidia = host.sysfs.link_name(f"bus/pci/devices/{address}/driver") == "nvidia"
    resource_prefix = host.sysfs.kernel_path(f"bus/pci/devices/{address}") + "/resource"
    holders: list[Holder] = []
    for pid, targets, mapped in open_files(host):
        found: list[tuple[str, str]] = []
        for target in targets:
            if target in nodes:
                found.append((target, nodes[target]))
            elif nvidia and target.startswith("/dev/nvidia"):
                found.append((target, "nvidia"))
        found += [(path, "mmap") for path in mapped if path.startswith(resource_prefix)]
        if found:
            command = (host.procfs.read(f"{pid}/comm") or "?").strip()
            for path, kind in dict.fromkeys(found):
                holders.append(Holder(pid, command, path, kind))
    return holders


def blocking(holders: list[Holder]) -> list[Holder]:
    """Holders that make an unbind block. Sound cards are disconnected and their users
    notified, so those are only worth a warning."""
    return [h for h in holders if h.kind != "sound"]
