"""Fault injection at every point of prepare and release, of every kind that point can see.

A clean run lists the injection points (each sysfs control write, module load/unload and
libvirt call, in order). Then, for each point and kind, a fresh fake kernel runs with that
one fault: the hook must fail cleanly and, after its own rollback (or `recover` when the
process was killed), the host must equal its starting snapshot: every driver link,
driver_override, BAR size and module. A fault during release is followed by `recover`.

Each run arms its own fault: the injection points are counted from the start of that run, and
a fault that did not fire (the run ended earlier) is gone before the next run, so `recover`
never meets the fault meant for release. A write that blocks is injected as "deadline" (it
fails as the step's time runs out, without waiting for the clock), so no outcome depends on
how busy the machine is; tests/test_safety.py times a real blocked write.

"stuck" is a write, a `modprobe -r` or a libvirt call that does not return while the test
holds it (an unbind while a process holds the device; tests/fakekernel.py): the hook's real
helper process blocks on a pipe the test holds. The hook must return anyway, name the stuck device, write nothing more to
it, restore every other device, and refuse `recover` until the test lets the write finish;
`recover` then restores everything. Such a write never returns, so how long the hook waits
for it (FakeKernel.stuck_wait) changes nothing in the outcome.

The exhaustive matrix (every point × every kind) is marked slow: `tools/test` runs it, plain
`pytest` runs one kind per point, a different kind at each point.
"""

from pathlib import Path

import pytest
from fakekernel import FakeKernel, Killed
from hosts import SEED_PROFILE, Bar, Function, HostSpec, demo_host
from runs import STATE_DIR, hook, recover
from test_actions_modprobe_remove import PROFILE as NVIDIA_STACK
from test_actions_modprobe_remove import nvidia_host as nvidia_stack_host

from passthrough.host.sysfs import can_block

MiB = 1 << 20


NVIDIA = """\
devices: {gpu: "0000:0a:00.0", gpu-audio: "0000:0a:00.1", gpu-usb: "0000:0a:00.2", gpu-serial: "0000:0a:00.3"}
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: {devices: [gpu, gpu-audio, gpu-usb, gpu-serial], via: sysfs}
"""


def nvidia_host() -> HostSpec:
    """A 4-function NVIDIA card (video, audio, USB xHCI, USB-C UCSI) in one IOMMU group."""
    fns = [
        Function(
            "0000:00:01.1", "0x1022", "0x1483", "0x060400", "pcieport", 20, description="bridge"
        )
    ]
    for fn, (device, cls, driver) in enumerate(
        [
            ("0x2204", "0x030000", "nouveau"),
            ("0x1aef", "0x040300", "snd_hda_intel"),
            ("0x1aed", "0x0c0330", "xhci_hcd"),
            ("0x1aee", "0x0c8000", "nvidia-gpu"),
        ]
    ):
        bars = {0: Bar(16 * MiB, 0xFB000000 + fn * 0x1000000, flags=0x00040200)}
        fns.append(
            Function(f"0000:0a:00.{fn}", "0x10de", device, cls, driver, 21, "0000:00:01.1", bars)
        )
    return HostSpec(
        functions=fns,
        modules=["nouveau", "snd_hda_intel", "xhci_pci", "i2c_nvidia_gpu"],
        drivers=["nouveau", "snd_hda_intel", "xhci_hcd", "nvidia-gpu", "pcieport"],
    )


CASES = {
    "seed": (demo_host, SEED_PROFILE),
    "nvidia-4fn": (nvidia_host, NVIDIA),
    # The proprietary stack unloaded before the detach (modprobe -r takes nvidia_modeset and
    # nvidia along); release loads it back and checks the card is on nvidia again.
    "nvidia-stack": (nvidia_stack_host, NVIDIA_STACK),
}
WRITE_KINDS = ("EBUSY", "EINVAL", "ENODEV", "deadline", "kill")


def kinds_for(point: str, by_libvirt: bool = False) -> tuple[str, ...]:
    """by_libvirt: a write libvirtd makes inside a node-device call. Stuck there, it is
    libvirtd's worker that waits in the kernel; the hook sees a libvirt call that times out
    ("deadline" at the libvirt point). The hook's own writes that can wait in the kernel
    run in a detached helper: they get "stuck" instead of "deadline"."""
    if point.startswith("modprobe -r"):  # it unbinds the module's devices: it can get stuck
        return ("command", "deadline", "kill", "stuck")
    if point.startswith("modprobe"):
        return ("command", "deadline", "kill")
    if point.startswith("libvirt"):  # libvirtd unbinds the device: it can get stuck there
        return ("libvirt", "deadline", "kill", "stuck")
    probes = ("nobind",) if point == "bus/pci/drivers_probe" or point.endswith("/bind") else ()
    if by_libvirt or not can_block(point):
        return WRITE_KINDS + probes
    return tuple(k for k in WRITE_KINDS if k != "deadline") + ("stuck",) + probes


class Case:
    """One fake kernel at its own root, with the profile, driven through runs.hook."""

    count = 0

    def __init__(self, fs, shape: str):
        Case.count += 1
        spec, text = CASES[shape]
        self.kernel = FakeKernel(fs, spec(), root=f"/hosts/{Case.count}")
        self.kernel.stuck_wait = 0.3
        self.root = self.kernel.root
        profiles = self.root / "profiles"
        profiles.mkdir()
        (profiles / "win10.yaml").write_text(text)
        self.start = self.kernel.snapshot()

    def run(self, *args: str, fault: tuple[int, str] | None = None) -> tuple[int | str, str]:
        """One hook run; `fault` = (index of the injection point in this run, kind)."""
        self.kernel.points.clear()
        self.kernel.libvirt_points.clear()
        self.kernel.fail_nth = fault
        try:
            result = (
                recover(self.kernel, root=self.root)
                if args == ("recover",)
                else hook(self.kernel, *args, config=self.root / "profiles", root=self.root)
            )
        except Killed:
            return "killed", ""
        finally:
            self.kernel.fail_nth = None
            self.kernel.release_hang.set()
        return result.code, result.text

    def stuck_problems(self, label: str, code: int | str, text: str) -> list[str]:
        """After a run that left a write stuck: what is wrong. Then the write is let go, and
        recover must restore everything."""
        stuck = self.kernel.stuck_devices()
        named = self.kernel.stuck_subjects()
        problems = []
        if code != 1:
            problems.append(f"{label}: exit {code} with a stuck write: {text[-300:]}")
        problems += [
            f"{label}: stuck {d} not reported: {text[-400:]}"
            for d in named
            if f"STUCK: {d}:" not in text
        ]
        if self.kernel.writes_on_stuck:
            problems.append(f"{label}: wrote to the stuck device: {self.kernel.writes_on_stuck}")
        now = self.kernel.snapshot()
        problems += [
            f"{label}: {address} not restored while {', '.join(sorted(stuck))} is stuck"
            for address in now
            if address not in stuck
            and address not in ("modules", "drivers")
            and now[address] != self.start[address]
        ]
        code, text = self.run("recover")
        if code != 1 or not all(f"{d} is still stuck in the kernel" in text for d in named):
            problems.append(f"{label}: recover went on while stuck (exit {code}): {text[-300:]}")
        self.kernel.release_stuck()
        code, text = self.run("recover")
        if code != 0 or self.kernel.snapshot() != self.start:
            problems.append(
                f"{label}: not restored by recover once free (exit {code}): {text[-400:]}"
            )
        return problems


Point = tuple[str, bool]  # an injection point, and whether libvirtd makes that write


def clean_points(fs, shape: str) -> tuple[list[Point], list[Point], dict]:
    case = Case(fs, shape)
    kernel = case.kernel
    assert case.run("prepare", "begin")[0] == 0
    prepare_points = [(p, i in kernel.libvirt_points) for i, p in enumerate(kernel.points)]
    prepared = kernel.snapshot()
    assert case.run("release", "end")[0] == 0
    assert kernel.snapshot() == case.start
    release_points = [(p, i in kernel.libvirt_points) for i, p in enumerate(kernel.points)]
    return prepare_points, release_points, prepared


def injections(points: list[Point], exhaustive: bool) -> list[tuple[int, str, str]]:
    """(index, point, kind): every kind at every point, or one kind per point, taking the
    kinds in turn so that the sample still meets each kind at many points."""
    if exhaustive:
        return [(i, p, kind) for i, (p, lv) in enumerate(points) for kind in kinds_for(p, lv)]
    return [(i, p, kinds_for(p, lv)[i % len(kinds_for(p, lv))]) for i, (p, lv) in enumerate(points)]


EXHAUSTIVE = [
    pytest.param(True, marks=pytest.mark.slow, id="all-kinds"),
    pytest.param(False, id="sample"),
]


@pytest.mark.parametrize("exhaustive", EXHAUSTIVE)
@pytest.mark.parametrize("shape", sorted(CASES))
def test_every_fault_in_prepare_is_rolled_back(fs, shape, exhaustive, record_property):
    points, _, prepared = clean_points(fs, shape)
    problems, covered, stuck_cases = [], 0, 0
    for index, point, kind in injections(points, exhaustive):
        case = Case(fs, shape)
        code, text = case.run("prepare", "begin", fault=(index, kind))
        if kind == "stuck":
            problems += case.stuck_problems(f"{point} {kind}", code, text)
            stuck_cases += 1
            covered += 1
            continue
        if code == "killed":
            code, text = case.run("recover")
        elif code == 0:
            # A fault the step absorbed must leave the same result as a clean run.
            if case.kernel.snapshot() != prepared:
                problems.append(f"{point} {kind}: exit 0 but not the prepared state")
            covered += 1
            continue
        if case.kernel.snapshot() != case.start:
            problems.append(f"{point} {kind}: host not restored (exit {code}): {text[-400:]}")
        if "Traceback" in text or code not in (0, 1):
            problems.append(f"{point} {kind}: exit {code}: {text[-300:]}")
        if Path(case.root, STATE_DIR, "win10.json").exists():
            problems.append(f"{point} {kind}: journal left behind")
        covered += 1
    record_property("injection_points", covered)
    print(
        f"\n{shape}: prepare: {covered} injections ({stuck_cases} stuck) at {len(points)} "
        f"points, host restored in all"
    )
    assert not problems, "\n".join(problems)
    assert covered >= (3 if exhaustive else 1) * len(points)


@pytest.mark.parametrize("exhaustive", EXHAUSTIVE)
@pytest.mark.parametrize("shape", sorted(CASES))
def test_every_fault_in_release_is_recovered(fs, shape, exhaustive, record_property):
    _, points, _ = clean_points(fs, shape)
    problems, covered, stuck_cases = [], 0, 0
    for index, point, kind in injections(points, exhaustive):
        case = Case(fs, shape)
        assert case.run("prepare", "begin")[0] == 0
        code, text = case.run("release", "end", fault=(index, kind))
        if kind == "stuck":
            problems += case.stuck_problems(f"{point} {kind}", code, text)
            stuck_cases += 1
            covered += 1
            continue
        if code != 0:
            code, text = case.run("recover")
        if code != 0 or case.kernel.snapshot() != case.start:
            problems.append(
                f"{point} {kind}: not restored after recover (exit {code}): {text[-400:]}"
            )
        covered += 1
    record_property("injection_points", covered)
    print(
        f"\n{shape}: release: {covered} injections ({stuck_cases} stuck) at {len(points)} "
        f"points, host restored in all"
    )
    assert not problems, "\n".join(problems)
