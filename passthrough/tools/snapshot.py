"""`passthrough-hook snapshot DIR`: copy the PCI, IOMMU and module facts of this host's
sysfs and /proc into a tree that `--root DIR` accepts, for bug reports and tests.

Only names, symlinks and small attribute files from fixed lists are copied, never a
device's `config`, `rom` or BAR `resourceN` files (reading those touches the hardware,
and they can be large); nothing over 64 KiB. The layout is the kernel's (and the one
tests/hosts.py writes): sys/bus/pci/devices links into sys/devices/..., driver
directories with their control files (empty) and device links, sys/kernel/iommu_groups,
sys/module/*/initstate, proc/{modules,cmdline,cpuinfo (first CPU's vendor only),
sys/kernel/osrelease}, and the running kernel's modules.builtin, vfio module names, the vfio
lines of modules.dep and the CONFIG_VFIO*/CONFIG_IOMMUFD* lines of /boot/config-<release>.
proc/cmdline is copied as is: it may name the root filesystem's UUID.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..errors import EXIT_OK, UsageError
from ..host import detached
from ..host.sysfs import READ_TIMEOUT, Sysfs, locked_device
from ..output import emit
from .common import PROG, add_json, add_root, parser_for
from .facts import ADDRESS, HostFacts
from .pcidb import PCI_IDS_PATHS, PciIds, find_pci_ids

MAX_FILE = 64 * 1024
DEVICE_ATTRIBUTES = (
    "vendor",
    "device",
    "class",
    "revision",
    "subsystem_vendor",
    "subsystem_device",
    "driver_override",
    "reset_method",
    "enable",
    "numa_node",
    "modalias",
    "boot_vga",
    "resource",
    "irq",
    "local_cpulist",
    "current_link_speed",
    "current_link_width",
    "max_link_speed",
    "max_link_width",
    "d3cold_allowed",
    "power_state",
    "sriov_totalvfs",
    "sriov_numvfs",
)
RESIZE_FILE = re.compile(r"^resource\d+_resize$")
# Belt and braces over the allowlist: these read device memory or config space.
NEVER = re.compile(r"^(config|rom|resource\d+(_wc)?)$")
DEVICE_LINKS = ("driver", "iommu_group")
DRIVER_FILES = (
    "bind",
    "unbind",
    "new_id",
    "remove_id",
)  # write-only in sysfs: copied as empty names


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for(
        "snapshot",
        "Copy this host's PCI, IOMMU and module facts (names, links and small "
        "attribute files; never config space, ROMs or BARs) into DIR, a tree that "
        "--root accepts. For bug reports and tests.",
    )
    add_root(parser)
    add_json(parser)
    parser.add_argument("directory", metavar="DIR", help="where to write the tree (new or empty)")
    return parser


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)
    copier = Snapshot(Path(args.root), Path(args.directory))
    copier.run()
    counts = copier.counts
    for warning in copier.warnings:
        print(f"{PROG} snapshot: warning: {warning}", file=err)
    if args.json:
        emit(
            out,
            "snapshot",
            {
                "ok": True,
                "root": str(args.root),
                "directory": str(args.directory),
                "counts": {
                    k: counts[k] for k in ("device", "group", "driver", "module", "file", "link")
                },
                "notes": copier.notes,
                "unanswered": copier.unanswered,
            },
        )
        return EXIT_OK
    print(
        f"Wrote a snapshot of {args.root} to {args.directory}: {counts['device']} PCI devices, "
        f"{counts['group']} IOMMU groups, {counts['driver']} drivers, {counts['module']} modules "
        f"({counts['file']} files, {counts['link']} links).",
        file=out,
    )
    for note in copier.notes:
        print(f"Note: {note}", file=out)
    print(f"Look at it with `{PROG} iommu --root {args.directory}`.", file=out)
    return EXIT_OK


class Snapshot:
    def __init__(self, source: Path, target: Path, read_timeout: float | None = None):
        self.source = source
        self.target = target
        self.sysfs = Sysfs(source, host=None)  # reads only (and the tests' guard applies)
        self.facts = HostFacts(source)
        self.counts: Counter = Counter()
        self.notes: list[str] = []
        # Reads that take the device lock (driver_override) go through a bounded read: a
        # device a write is stuck on would hold them for as long. Devices that did not answer:
        self.read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
        self.unanswered: list[str] = []
        self.warnings: list[str] = []

    def run(self) -> None:
        if self.target.exists() and (not self.target.is_dir() or any(self.target.iterdir())):
            raise UsageError(
                f"{self.target} exists and is not an empty directory; give a new directory"
            )
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            self.pci_devices()
            self.drivers()
            self.iommu_groups()
            self.modules()
            self.proc()
            self.kernel_modules()
            self.pci_ids()
        except OSError as exc:  # reading the source is forgiving; this is writing the copy
            raise UsageError(
                f"cannot write the snapshot in {self.target}: {exc.strerror} ({exc.filename})"
            ) from None

    # --- writing the tree -------------------------------------------------------------------

    def _out(self, rel: str) -> Path:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UsageError(f"refusing to write {rel} outside {self.target}")
        return self.target / rel

    def put(self, rel: str, data: bytes) -> None:
        path = self._out(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.counts["file"] += 1

    def link(self, rel: str, target: str) -> None:
        path = self._out(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
        self.counts["link"] += 1

    def mkdir(self, rel: str) -> None:
        self._out(rel).mkdir(parents=True, exist_ok=True)

    def copy(self, rel: str) -> bool:
        """Copy one small file from the source (rel from the root); False if absent or too big."""
        name = os.path.basename(rel)
        if NEVER.match(name):
            return False
        if locked_device(rel):
            return self._copy_locked(rel)
        try:
            with open(self.source / rel, "rb") as handle:
                data = handle.read(MAX_FILE + 1)
        except OSError:
            return False  # absent, or an attribute this device does not support (EINVAL, EIO)
        if len(data) > MAX_FILE:
            self.notes.append(f"skipped {rel}: over {MAX_FILE // 1024} KiB")
            return False
        self.put(rel, data)
        return True

    def _copy_locked(self, rel: str) -> bool:
        """Copy an attribute whose read takes the device lock, through a bounded read; a
        device that does not answer is named and left without it."""
        address = os.path.basename(os.path.dirname(rel))
        try:
            data = self.sysfs.read_bounded(rel.removeprefix("sys/"), self.read_timeout)
        except detached.StuckWrite as exc:
            self.unanswered.append(address)
            self.warnings.append(
                f"{address}: reading {os.path.basename(rel)} did not return within "
                f"{self.read_timeout:g} s: a write stuck in the kernel holds the device's lock "
                f"(helper pid {exc.pid} still waits there); the snapshot has the rest of the "
                f"device, without that file. `{PROG} status` shows stuck writes; once the "
                f"process holding the device exits, take the snapshot again"
            )
            self.notes.append(f"{address}: {os.path.basename(rel)} did not answer; left out")
            return False
        if data is None:
            return False
        self.put(rel, data)
        return True

    def copy_link(self, rel: str) -> bool:
        """Copy a symlink as is if it points inside the source's /sys (sysfs links are relative)."""
        path = self.source / rel
        try:
            target = os.readlink(path)
        except OSError:
            return False
        inside = os.path.realpath(path).startswith(os.path.realpath(self.source / "sys") + os.sep)
        if os.path.isabs(target) or not inside:
            self.notes.append(f"skipped the link {rel} -> {target}: it leads outside sys/")
            return False
        self.link(rel, target)
        return True

    # --- what is copied ---------------------------------------------------------------------

    def pci_devices(self) -> None:
        for address in self.sysfs.listdir("bus/pci/devices"):
            if not ADDRESS.match(address) or not self.copy_link(f"sys/bus/pci/devices/{address}"):
                continue
            device_dir = os.path.relpath(
                os.path.realpath(self.source / "sys/bus/pci/devices" / address),
                os.path.realpath(self.source),
            )
            self.mkdir(device_dir)
            names = self.sysfs.listdir(os.path.relpath(device_dir, "sys"))
            for name in [*DEVICE_ATTRIBUTES, *(n for n in names if RESIZE_FILE.match(n))]:
                self.copy(f"{device_dir}/{name}")
            for name in DEVICE_LINKS:
                self.copy_link(f"{device_dir}/{name}")
            if "remove" in names:  # write-only: the remove_rescan step looks for it
                self.put(f"{device_dir}/remove", b"")
            self.counts["device"] += 1

    def drivers(self) -> None:
        for driver in self.sysfs.listdir("bus/pci/drivers"):
            base = f"sys/bus/pci/drivers/{driver}"
            self.mkdir(base)
            for name in self.sysfs.listdir(f"bus/pci/drivers/{driver}"):
                if name in DRIVER_FILES:
                    self.put(f"{base}/{name}", b"")
                elif ADDRESS.match(name) or name == "module":  # module: which one registers it
                    self.copy_link(f"{base}/{name}")
            self.counts["driver"] += 1
        for control in ("drivers_probe", "rescan"):  # write-only: copied as empty names
            if self.sysfs.exists(f"bus/pci/{control}"):
                self.put(f"sys/bus/pci/{control}", b"")
        self.copy("sys/bus/pci/drivers_autoprobe")

    def iommu_groups(self) -> None:
        for group in self.sysfs.listdir("kernel/iommu_groups"):
            base = f"sys/kernel/iommu_groups/{group}"
            self.copy(f"{base}/type")
            for address in self.sysfs.listdir(f"kernel/iommu_groups/{group}/devices"):
                if ADDRESS.match(address):
                    self.copy_link(f"{base}/devices/{address}")
            self.counts["group"] += 1

    def modules(self) -> None:
        for module in self.sysfs.listdir("module"):
            # A module with initstate was loaded; a directory without one is built in.
            if not self.copy(f"sys/module/{module}/initstate"):
                self.mkdir(f"sys/module/{module}")
            self.counts["module"] += 1

    def proc(self) -> None:
        for rel in ("proc/modules", "proc/cmdline", "proc/sys/kernel/osrelease"):
            self.copy(rel)
        vendor = self.facts.cpu_vendor()
        if vendor:
            self.put("proc/cpuinfo", f"processor\t: 0\nvendor_id\t: {vendor}\n\n".encode())

    def pci_ids(self) -> None:
        """The pci.ids lines of the devices copied, so `iommu --root` on the snapshot names
        them as on the host, on any machine (which reads only the tree's own copy)."""
        ids = {(function.vendor, function.device) for function in self.facts.functions().values()}
        text = PciIds(find_pci_ids(self.source)).excerpt(ids)
        if text:
            self.put(PCI_IDS_PATHS[0], text.encode())

    def kernel_modules(self) -> None:
        """modules.builtin and the names of the vfio module files: enough for `check` to tell
        whether vfio can be loaded, without copying the kernel's modules."""
        directory = self.facts.module_dir()
        if directory is None or not directory.is_dir():
            return
        base = os.path.relpath(directory, self.source)
        builtin = directory / "modules.builtin"
        if builtin.is_file() and builtin.stat().st_size > MAX_FILE:
            lines = [
                line
                for line in builtin.read_text(errors="replace").splitlines()
                if "/vfio/" in line
            ]
            self.put(f"{base}/modules.builtin", "".join(f"{line}\n" for line in lines).encode())
            self.notes.append(f"{builtin} is over {MAX_FILE // 1024} KiB: kept its vfio lines only")
        else:
            self.copy(f"{base}/modules.builtin")
        for sub in ("vfio", "iommu/iommufd"):
            for dirpath, dirnames, files in os.walk(directory / "kernel" / "drivers" / sub):
                dirnames.sort()
                for name in sorted(files):
                    self.put(os.path.relpath(os.path.join(dirpath, name), self.source), b"")
        # Which vfio modules this kernel has and how it was built (vfio_virqfd merged into vfio
        # from 6.2, CONFIG_VFIO_CONTAINER=n leaving out vfio_iommu_type1): their lines only.
        self.put_lines(
            directory / "modules.dep", lambda line: "/vfio/" in line or "/iommufd/" in line
        )
        release = self.facts.kernel_release()
        self.put_lines(
            self.source / "boot" / f"config-{release}",
            lambda line: re.search(r"\bCONFIG_(VFIO|IOMMUFD)\w*", line) is not None,
        )

    def put_lines(self, path: Path, keep: Callable[[str], bool]) -> None:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return
        kept = "".join(f"{line}\n" for line in lines if keep(line))
        if kept:
            self.put(os.path.relpath(path, self.source), kept.encode())
