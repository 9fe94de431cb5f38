"""Prepare + release on a simulated kernel: the program's own time, without the kernel's.

The host is a real directory tree on tmpfs (tests/hosts.py writes it, shaped like
/sys and /proc), so every read the program makes is a real system call on a real file,
as on /sys. Writes to control files (driver_override, unbind, drivers_probe,
resourceN_resize) go to passthrough.host.kernel_model.KernelModel, the same model the
dry run and the fake kernel use, and the time spent inside it is the "kernel" time;
module loading is simulated the same way. What is left of the wall time is the
program's overhead: parsing the profile, checks, journal writes (fsynced), logging,
the thread that bounds each write, and the look for processes holding a device before
each unbind, over a process table mirrored from this machine's /proc (same number of
processes, open files and mapped regions; see mirror_process_table). The main parts
are timed separately (Breakdown).

Profiles have N devices, N/2 GPU-like cards (video + audio in one IOMMU group, the
video function with a Resizable BAR 2). prepare/begin loads the vfio modules, detaches
every device to vfio-pci through sysfs and resizes each card's BAR 2; release/end undoes
it all. The run is in-process through passthrough.cli.main, so interpreter start and
imports are not counted here (the dry-run figure has them).
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from .measure import BenchError, Figure

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/hosts.py: host shapes written as sysfs trees

from fakekernel import TreeStore  # noqa: E402  the fake kernel's store, on a real tmpfs tree
from hosts import Bar, Function, GiB, HostSpec, MiB, write_tree  # noqa: E402

from passthrough.cli import main  # noqa: E402
from passthrough.host import Host, make_host  # noqa: E402
from passthrough.host.kernel_model import KernelModel  # noqa: E402
from passthrough.host.modules import Modules, canonical, driver_names  # noqa: E402
from passthrough.host.sysfs import Sysfs  # noqa: E402

DEVICE_COUNTS = (2, 4, 8, 32)
DOMAIN = "bench"


def card_host(devices: int) -> HostSpec:
    """devices / 2 GPU-like cards, each behind its own bridge, in its own IOMMU group."""
    functions = []
    for card in range(devices // 2):
        bridge = f"0000:00:{card + 1:02x}.1"
        bus = 0x10 + card
        functions += [
            Function(
                address=bridge,
                vendor="0x1022",
                device="0x1483",
                pci_class="0x060400",
                driver="pcieport",
                group=100 + card,
            ),
            Function(
                address=f"0000:{bus:02x}:00.0",
                vendor="0x1002",
                device="0x73df",
                pci_class="0x030000",
                driver="amdgpu",
                group=card,
                bridge=bridge,
                bars={
                    0: Bar(16 * GiB, 0x7000000000 + card * 0x800000000, resizable=(16384,)),
                    2: Bar(
                        256 * MiB,
                        0x6000000000 + card * 0x20000000,
                        resizable=tuple(1 << n for n in range(1, 9)),
                    ),
                },
            ),
            Function(
                address=f"0000:{bus:02x}:00.1",
                vendor="0x1002",
                device="0xab28",
                pci_class="0x040300",
                driver="snd_hda_intel",
                group=card,
                bridge=bridge,
                bars={0: Bar(16 * 1024, 0xFC000000 + card * 0x10000, flags=0x00040200)},
            ),
        ]
    return HostSpec(
        functions=functions,
        modules=["amdgpu", "snd_hda_intel"],
        drivers=["amdgpu", "snd_hda_intel", "pcieport"],
    )


def card_profile(devices: int) -> str:
    cards = range(devices // 2)
    lines = ["devices:"]
    for card in cards:
        lines += [
            f'  gpu{card}: "0000:{0x10 + card:02x}:00.0"',
            f'  gpu{card}-audio: "0000:{0x10 + card:02x}:00.1"',
        ]
    names = ", ".join(f"gpu{card}, gpu{card}-audio" for card in cards)
    lines += [
        "prepare/begin:",
        "  - modprobe: [vfio, vfio_iommu_type1, vfio_pci]",
        f"  - detach: {{devices: [{names}], via: sysfs}}",
    ]
    lines += [f"  - resize_bar: {{device: gpu{card}, bar: 2, size: 8MiB}}" for card in cards]
    return "\n".join(lines) + "\n"


def mirror_process_table(root: Path, proc: Path = Path("/proc")) -> dict:
    """Give the tree a process table shaped like this machine's: as many processes, each
    with as many open files and mapped regions (reading /proc only). Before unbinding a
    device the program looks through every process for holders of it, so the size of the
    process table is part of its cost; the copies hold nothing that belongs to a device."""
    counts = {"processes": 0, "fds": 0, "maps_lines": 0}
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            fds = len(os.listdir(proc / pid / "fd"))
            maps = (proc / pid / "maps").read_text().count("\n")
        except OSError:
            continue  # exited meanwhile
        fake = root / "proc" / pid
        (fake / "fd").mkdir(parents=True)
        (fake / "comm").write_text(f"process{pid}\n")
        for number in range(fds):
            os.symlink(f"pipe:[{number + 1000}]", fake / "fd" / str(number))
        (fake / "maps").write_text(
            "".join(
                f"7f{line:010x}000-7f{line:010x}fff r-xp 00000000 fe:01 {line} /usr/lib/x86_64-linux-gnu/libfoo.so.{line}\n"
                for line in range(maps)
            )
        )
        counts["processes"] += 1
        counts["fds"] += fds
        counts["maps_lines"] += maps
    return counts


class SimulatedKernel:
    """A host tree on disk, the kernel model over it, and a clock for the model's time."""

    def __init__(self, spec: HostSpec, root: Path):
        if os.path.realpath(root) == "/":
            raise BenchError("refusing to simulate a kernel at / (the real /sys)")
        self.spec = spec
        self.root = root
        write_tree(spec, root)
        self.process_table = mirror_process_table(root)
        self.store = TreeStore(root)
        native = {f.address: f.driver for f in spec.functions}
        self.model = KernelModel(self.store, native_driver=native.get)
        self.modules = set(spec.modules)
        self.seconds = 0.0  # time spent inside simulated kernel operations

    def timed(self, operation, *args) -> None:
        started = time.perf_counter()
        try:
            operation(*args)
        finally:
            self.seconds += time.perf_counter() - started

    def host(self, root) -> Host:
        """The program's own host on the tree (its /proc reads, its refusals to run commands
        or call libvirt outside /), with sysfs writes and module loading simulated."""
        host = make_host(self.root)
        host.sysfs = SimulatedSysfs(self, host)
        host.modules = SimulatedModules(self, host)
        return host

    def state(self) -> dict:
        """Everything a run may change; prepare + release must give it back unchanged."""
        result = {}
        for fn in self.spec.functions:
            rel = f"bus/pci/devices/{fn.address}"
            result[fn.address] = (
                self.store.link_name(f"{rel}/driver"),
                self.store.read(f"{rel}/driver_override"),
                self.store.read(f"{rel}/resource"),
            )
        result["modules"] = sorted(self.modules)
        result["drivers"] = sorted(os.listdir(self.root / "sys/bus/pci/drivers"))
        return result

    # --- module loading, as the fake kernel in tests/fakekernel.py does it -----------------

    def _write_proc_modules(self) -> None:
        (self.root / "proc" / "modules").write_text(
            "".join(f"{name} 65536 0 - Live 0x0000000000000000\n" for name in sorted(self.modules))
        )

    def load(self, module: str) -> None:
        self.modules.add(canonical(module))
        self._write_proc_modules()
        if canonical(module) == "vfio_pci":
            base = self.root / "sys/bus/pci/drivers/vfio-pci"
            base.mkdir(exist_ok=True)
            for name in ("bind", "unbind", "new_id", "remove_id"):
                (base / name).touch()

    def unload(self, module: str) -> None:
        self.modules.discard(canonical(module))
        self._write_proc_modules()
        for driver in driver_names(module):
            for fn in self.spec.functions:
                if self.store.link_name(f"bus/pci/devices/{fn.address}/driver") == driver:
                    self.store.set_driver_link(fn.address, None)
            driver_dir = self.root / "sys/bus/pci/drivers" / driver
            if driver_dir.exists() and driver not in self.spec.drivers:
                shutil.rmtree(driver_dir)


class SimulatedSysfs(Sysfs):
    """The real Sysfs (paths, checks, bounded writes), with the write itself done by the model."""

    def __init__(self, kernel: SimulatedKernel, host: Host):
        super().__init__(kernel.root, host)
        self.kernel = kernel

    def _apply(self, rel: str, path: Path, value: str) -> None:
        self.kernel.timed(self.kernel.model.write, rel, value)

    def _write_detached(self, rel: str, path: Path, value: str, what: str) -> None:
        # The real hook hands writes that can block (unbind, drivers_probe...) to a helper
        # process; the model never blocks, so it takes them here, bounded like the others.
        self.host.bounded(what, lambda: self._apply(rel, path, value))


class SimulatedModules(Modules):
    """The program's reads of /proc/modules, with modprobe simulated."""

    def __init__(self, kernel: SimulatedKernel, host: Host):
        super().__init__(kernel.root, host)
        self.kernel = kernel

    def load(self, module: str, drivers: tuple[str, ...] = ()) -> None:
        self.host.record(f"modprobe {module}")
        self.kernel.timed(self.kernel.load, module)

    def unload(self, module: str) -> None:
        self.host.record(f"modprobe -r {module}")
        self.kernel.timed(self.kernel.unload, module)


class Breakdown:
    """Time spent in some of the program's own functions (the overhead's main parts),
    measured by wrapping them for the length of the benchmark."""

    PARTS = (
        ("holder scans", "passthrough.holders", None, "find_holders"),
        ("journal writes", "passthrough.journal", "Journal", "save"),
        ("bounded writes", "passthrough.host", "Host", "bounded"),
    )

    def __init__(self):
        self.seconds = {label: 0.0 for label, *_ in self.PARTS}
        self._originals: list[tuple[object, str, object]] = []

    def __enter__(self) -> Breakdown:
        import importlib

        for label, module_name, class_name, function in self.PARTS:
            module = importlib.import_module(module_name)
            owner = getattr(module, class_name) if class_name else module
            original = getattr(owner, function)
            self._originals.append((owner, function, original))
            setattr(owner, function, self._timed(label, original))
        return self

    def __exit__(self, *exc) -> None:
        for owner, function, original in reversed(self._originals):
            setattr(owner, function, original)

    def _timed(self, label: str, original):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        return timed

    def reset(self) -> dict[str, float]:
        taken, self.seconds = self.seconds, {label: 0.0 for label in self.seconds}
        return taken


class Scenario:
    """One device count: its host tree, its profile, and one prepare + release at a time."""

    def __init__(self, devices: int, work: Path):
        self.devices = devices
        base = work / f"cards-{devices}"
        self.kernel = SimulatedKernel(card_host(devices), base / "host")
        self.config = base / "config"
        self.config.mkdir(parents=True)
        (self.config / f"{DOMAIN}.yaml").write_text(card_profile(devices))
        self.state_dir = base / "state"
        self.log = base / "hook.log"
        self.initial = self.kernel.state()

    def event(self, operation: str, sub_operation: str) -> None:
        err = io.StringIO()
        code = main(
            [
                "--root",
                str(self.kernel.root),
                "--config-dir",
                str(self.config),
                "--state-dir",
                str(self.state_dir),
                "--log-file",
                str(self.log),
                DOMAIN,
                operation,
                sub_operation,
                "-",
            ],
            stdin=io.StringIO("<domain/>"),
            host_factory=self.kernel.host,
            out=io.StringIO(),
            err=err,
        )
        if code != 0:
            raise BenchError(
                f"{self.devices} devices: {operation}/{sub_operation} exited {code}:\n{err.getvalue()}"
            )

    def cycle(self) -> tuple[float, float]:
        """prepare/begin then release/end; (wall seconds, seconds inside the simulated kernel)."""
        self.kernel.seconds = 0.0
        started = time.perf_counter()
        self.event("prepare", "begin")
        wall = time.perf_counter() - started
        prepared = self.kernel.state()  # not timed: the check is the benchmark's, not the program's
        started = time.perf_counter()
        self.event("release", "end")
        wall += time.perf_counter() - started
        if not all(
            prepared[a][0] == "vfio-pci"
            for a in prepared
            if a.startswith("0000:") and self.initial[a][0] != "pcieport"
        ):
            raise BenchError(
                f"{self.devices} devices: prepare did not move every device to vfio-pci"
            )
        if self.kernel.state() != self.initial:
            raise BenchError(f"{self.devices} devices: release did not restore the host")
        return wall, self.kernel.seconds


def measure(work: Path, rounds: int, warmup: int = 2) -> tuple[list[Figure], dict]:
    scenarios = [Scenario(n, work) for n in DEVICE_COUNTS]
    overhead: dict[int, list[float]] = {n: [] for n in DEVICE_COUNTS}
    kernel: dict[int, list[float]] = {n: [] for n in DEVICE_COUNTS}
    parts: dict[int, list[dict[str, float]]] = {n: [] for n in DEVICE_COUNTS}
    with Breakdown() as breakdown:
        for number in range(warmup + rounds):
            shift = number % len(scenarios)
            for scenario in scenarios[shift:] + scenarios[:shift]:
                breakdown.reset()
                wall, in_kernel = scenario.cycle()
                taken = breakdown.reset()
                # The simulated kernel runs inside the bounded writes: what is left is the thread.
                taken["bounded writes"] -= in_kernel
                if number >= warmup:
                    overhead[scenario.devices].append((wall - in_kernel) * 1000)
                    kernel[scenario.devices].append(in_kernel * 1000)
                    parts[scenario.devices].append({k: v * 1000 for k, v in taken.items()})
    figures = []
    medians = {
        n: {label: statistics.median(p[label] for p in parts[n]) for label in parts[n][0]}
        for n in DEVICE_COUNTS
    }
    unseen = [label for label, ms in medians[DEVICE_COUNTS[0]].items() if ms <= 0]
    if unseen:
        raise BenchError(
            f"no time measured in {', '.join(unseen)}: the program no longer calls what "
            f"bench/kernel_overhead.py Breakdown wraps; update PARTS"
        )
    for n in DEVICE_COUNTS:
        shares = ", ".join(f"{label} {ms:.1f}" for label, ms in medians[n].items())
        figures.append(
            Figure(
                f"prepare+release overhead, {n} devices",
                "ms",
                tuple(overhead[n]),
                note=f"excluded: simulated kernel {statistics.median(kernel[n]):.1f} ms; "
                f"included: {shares} ms",
            )
        )
    slope, intercept, r_squared = _fit([(n, statistics.median(overhead[n])) for n in DEVICE_COUNTS])
    per_device = [(overhead[32][i] - overhead[2][i]) / 30 for i in range(rounds)]
    figures.append(
        Figure(
            "overhead per device (32 vs 2 devices)",
            "ms",
            tuple(per_device),
            target="linear",
            met=r_squared >= 0.99,
            note=f"least squares over 2/4/8/32: {slope:.2f} ms/device + {intercept:.1f} ms, "
            f"R² = {r_squared:.4f}",
        )
    )
    details = {
        "process_table": scenarios[0].kernel.process_table,
        "per_device_ms": slope,
        "fixed_ms": intercept,
        "r_squared": r_squared,
        "kernel_ms_median": {n: statistics.median(kernel[n]) for n in DEVICE_COUNTS},
        "overhead_parts_ms_median": medians,
    }
    return figures, details


def _fit(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares line through points: slope, intercept, R²."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for _, y in points)
    residual = sum((y - (slope * x + intercept)) ** 2 for x, y in points)
    return slope, intercept, 1 - residual / total if total else 1.0
