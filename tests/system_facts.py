"""The non-PCI side of a host, for the toolbox actions: consoles, framebuffers, CPUs and
cpufreq, hugepages, cgroup v2, systemd, processes. Written in the real kernel's layout:

- /sys/class/vtconsole/vtconN -> ../../devices/virtual/vtconsole/vtconN (bind, name)
- /sys/bus/platform/devices/D -> ../../../devices/platform/D, `driver` links both ways,
  bind/unbind files in every platform driver directory
- /sys/devices/system/cpu/{online,possible,present}, cpuN/cpufreq -> ../cpufreq/policyN
- /sys/kernel/mm/hugepages/hugepages-<kB>kB/{nr,free}_hugepages
- /sys/fs/cgroup (v2): cgroup.controllers, cgroup.subtree_control, <group>/cpuset.cpus
- /run/systemd/system (what sd_booted() checks), the display-manager.service alias
- /proc/<pid>/{comm,status,cgroup,maps}, fd/N -> the file it has open
- a PCI function's drm/cardN, drm/renderDN and sound/cardN/<node>
No directory is left empty: git would drop it from config/demo-host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PLATFORM_FB_DRIVERS = ("efi-framebuffer", "simple-framebuffer", "simpledrm", "vesa-framebuffer")
ALL_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"


@dataclass
class Process:
    pid: int
    comm: str
    uid: int = 0
    cgroup: str = "/"  # the cgroup v2 path, as /proc/<pid>/cgroup shows after "0::"
    fds: dict[int, str] = field(default_factory=dict)  # fd number -> path it has open
    maps: tuple[str, ...] = ()  # files it has mapped (e.g. a PCI resource file)
    state: str = "S"  # Z: a zombie, already dead for every purpose but its parent's


@dataclass
class System:
    cpus: int = 0  # CPUs 0..cpus-1 present and online; 0: write no CPU tree
    governors: tuple[str, ...] = ()  # cpufreq governors available; () for no cpufreq
    governor: str = ""  # the current governor of every CPU
    hugepages: dict[int, int] = field(default_factory=dict)  # page size in kB -> pages reserved
    vtconsoles: tuple[tuple[str, bool], ...] = ()  # (name, bound), vtcon0 first
    framebuffers: tuple[tuple[str, str | None], ...] = ()  # (platform device, its driver or None)
    cgroups: dict[str, str] | None = None  # cgroup v2 group -> cpuset.cpus; None: no cgroup2 tree
    cpuset_enabled: bool = True  # cpuset listed in the root's cgroup.subtree_control
    systemd: bool = False
    display_manager: str | None = None  # the unit display-manager.service is an alias of
    processes: tuple[Process, ...] = ()
    drm: dict[str, tuple[str, ...]] = field(
        default_factory=dict
    )  # PCI address -> card1, renderD129
    sound: dict[str, tuple[int, tuple[str, ...]]] = field(
        default_factory=dict
    )  # address -> (card, nodes)


def write_system(system: System, root: Path) -> None:
    _made.clear()
    sys_dir = root / "sys"
    _cpus(system, sys_dir)
    for kib, count in system.hugepages.items():
        pool = sys_dir / "kernel/mm/hugepages" / f"hugepages-{kib}kB"
        _put(pool / "nr_hugepages", str(count))
        _put(pool / "free_hugepages", str(count))
    if system.hugepages:
        _put(root / "proc/sys/vm/compact_memory", "")
    _consoles(system, sys_dir)
    _cgroups(system, sys_dir)
    if system.systemd:
        # Not empty, so that git keeps it in config/demo-host: a transient unit as logind makes.
        _put(
            root / "run/systemd/system/session-2.scope",
            "# Transient stub\n[Scope]\nSlice=user-1000.slice",
        )
    if system.display_manager:
        _link_to(
            root / "etc/systemd/system/display-manager.service",
            f"/lib/systemd/system/{system.display_manager}",
        )
    for process in system.processes:
        _process(process, root / "proc" / str(process.pid))
    for address, names in system.drm.items():
        for name in names:
            _put(
                _pci_dir(root, address) / "drm" / name / "uevent",
                f"DEVNAME=dri/{name}\nDEVTYPE=drm_minor",
            )
    for address, (card, nodes) in system.sound.items():
        for node in nodes:
            _put(
                _pci_dir(root, address) / "sound" / f"card{card}" / node / "uevent",
                f"DEVNAME=snd/{node}",
            )


def _cpus(system: System, sys_dir: Path) -> None:
    if not system.cpus:
        return
    cpu_dir = sys_dir / "devices/system/cpu"
    every = _all_cpus(system.cpus)
    for name in ("online", "possible", "present"):
        _put(cpu_dir / name, every)
    for cpu in range(system.cpus):
        _dir(cpu_dir / f"cpu{cpu}")
        if system.governors:
            policy = cpu_dir / "cpufreq" / f"policy{cpu}"
            _put(policy / "scaling_available_governors", " ".join(system.governors))
            _put(policy / "scaling_governor", system.governor)
            _link(cpu_dir / f"cpu{cpu}/cpufreq", policy)


def _consoles(system: System, sys_dir: Path) -> None:
    for number, (name, bound) in enumerate(system.vtconsoles):
        device = sys_dir / "devices/virtual/vtconsole" / f"vtcon{number}"
        _put(device / "name", name)
        _put(device / "bind", "1" if bound else "0")
        _link(sys_dir / "class/vtconsole" / f"vtcon{number}", device)
    if not system.framebuffers:
        return
    drivers = sys_dir / "bus/platform/drivers"
    for driver in PLATFORM_FB_DRIVERS:
        for name in ("bind", "unbind"):
            _put(drivers / driver / name, "")
    for device_name, driver in system.framebuffers:
        device = sys_dir / "devices/platform" / device_name
        _put(device / "uevent", f"DRIVER={driver}" if driver else "")
        _link(sys_dir / "bus/platform/devices" / device_name, device)
        if driver:
            _link(device / "driver", drivers / driver)
            _link(drivers / driver / device_name, device)


def _cgroups(system: System, sys_dir: Path) -> None:
    if system.cgroups is None:
        return
    base = sys_dir / "fs/cgroup"
    _put(base / "cgroup.controllers", ALL_CONTROLLERS)
    enabled = ALL_CONTROLLERS.split()
    if not system.cpuset_enabled:
        enabled.remove("cpuset")
    _put(base / "cgroup.subtree_control", " ".join(enabled))
    for group, cpus in system.cgroups.items():
        # The files of an enabled controller; kept also when it is not enabled, a
        # simplification: the real kernel creates them when "+cpuset" is written.
        _put(base / group / "cgroup.controllers", " ".join(enabled))
        _put(base / group / "cgroup.subtree_control", "")
        _put(base / group / "cpuset.cpus", cpus)


def _process(process: Process, directory: Path) -> None:
    _put(directory / "comm", process.comm)
    states = {"S": "S (sleeping)", "R": "R (running)", "Z": "Z (zombie)", "D": "D (disk sleep)"}
    _put(
        directory / "status",
        f"Name:\t{process.comm}\nState:\t{states[process.state]}\nPid:\t{process.pid}\n"
        f"Uid:\t{process.uid}\t{process.uid}\t{process.uid}\t{process.uid}",
    )
    _put(directory / "cgroup", f"0::{process.cgroup}")
    # Every process maps its executable (one with no map at all is a kernel thread).
    executable = f"55d000000000-55d000001000 r-xp 00000000 08:01 4242 /usr/bin/{process.comm}"
    _put(
        directory / "maps",
        "\n".join(
            [executable] * (process.state != "Z")  # a zombie's memory is already freed
            + [
                f"7f0000{n:04x}000-7f0000{n:04x}fff rw-s 00000000 00:15 {1000 + n} {path}"
                for n, path in enumerate(process.maps)
            ]
        ),
    )
    for number, path in process.fds.items():
        _link_to(directory / "fd" / str(number), path)


def _pci_dir(root: Path, address: str) -> Path:
    return Path(os.path.realpath(root / "sys/bus/pci/devices" / address))


def _all_cpus(count: int) -> str:
    """CPUs 0..count-1 as the kernel lists them (this module runs without the package)."""
    return "" if not count else "0" if count == 1 else f"0-{count - 1}"


_made: set[Path] = set()  # directories made by this write_system (mkdir is slow on pyfakefs)


def _dir(path: Path) -> None:
    if path not in _made:
        path.mkdir(parents=True, exist_ok=True)
        _made.update((path, *path.parents))


def _put(path: Path, text: str) -> None:
    _dir(path.parent)
    path.write_text(text + "\n" if text else "")


def _link(path: Path, target: Path) -> None:
    _link_to(path, os.path.relpath(target, path.parent))


def _link_to(path: Path, target: str) -> None:
    _dir(path.parent)
    os.symlink(target, path)
