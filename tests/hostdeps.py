"""Facts about what the host is using, added to a host tree: processes with open device
files, DRM and sound nodes, disks with mounts and swap, network interfaces."""

from __future__ import annotations

import os
from pathlib import Path


def _device_dir(root: Path, address: str) -> Path:
    return Path(os.path.realpath(root / "sys/bus/pci/devices" / address))


def _put(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)


def add_process(
    root: Path, pid: int, command: str, files: list[str] = (), maps: list[str] = ()
) -> None:
    proc = root / "proc" / str(pid)
    _put(proc / "comm", command + "\n")
    (proc / "fd").mkdir(parents=True, exist_ok=True)
    for number, target in enumerate(files, start=3):
        os.symlink(target, proc / "fd" / str(number))  # absolute, as the kernel shows them
    # Every process maps its executable (one with no map at all is a kernel thread).
    lines = [f"55d000000000-55d000001000 r-xp 00000000 08:01 4242    /usr/bin/{command}"]
    lines += [
        f"7f00000{i:02d}000-7f00000{i:02d}fff rw-s 00000000 00:15 {100 + i}    {path}"
        for i, path in enumerate(maps)
    ]
    _put(proc / "maps", "\n".join(lines) + ("\n" if lines else ""))


def add_drm(root: Path, address: str, *names: str) -> None:
    for name in names:
        (_device_dir(root, address) / "drm" / name).mkdir(parents=True, exist_ok=True)


def add_sound(root: Path, address: str, card: int, *nodes: str) -> None:
    for node in nodes:
        (_device_dir(root, address) / "sound" / f"card{card}" / node).mkdir(
            parents=True, exist_ok=True
        )


def add_disk(
    root: Path, address: str, disk: str, partitions: list[str], path: str = "nvme/nvme0"
) -> None:
    base = _device_dir(root, address) / path / disk
    block_class = root / "sys/class/block"
    block_class.mkdir(parents=True, exist_ok=True)
    for directory in [base] + [base / p for p in partitions]:
        _put(directory / "dev", "259:0\n")
        _link(directory / "subsystem", block_class)
        _link(block_class / directory.name, directory)  # the kernel's list of block devices
        if directory != base:
            _put(directory / "partition", "1\n")


def add_mounts(root: Path, mounts: list[tuple[str, str]], swaps: list[str] = ()) -> None:
    _put(
        root / "proc/mounts", "".join(f"{src} {dst} ext4 rw,relatime 0 0\n" for src, dst in mounts)
    )
    _put(
        root / "proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n"
        + "".join(f"{s}\tpartition\t8388604\t0\t-2\n" for s in swaps),
    )


def add_dm(root: Path, dm: str, name: str, slaves: list[str]) -> None:
    _put(root / "sys/block" / dm / "dm/name", name + "\n")
    for slave in slaves:
        (root / "sys/block" / dm / "slaves" / slave).mkdir(parents=True, exist_ok=True)


def add_interface(root: Path, address: str, name: str, up: bool) -> None:
    net = _device_dir(root, address) / "net" / name
    _put(net / "flags", "0x1003\n" if up else "0x1002\n")
    _put(net / "operstate", "up\n" if up else "down\n")
