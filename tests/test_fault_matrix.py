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

The exhaustive matrix (every point × every kind) is marked slow: `tools/test` runs it, plain
`pytest` runs one kind per point, a different kind at each point.
"""

import io
from pathlib import Path

import pytest
from fakekernel import FakeKernel, Killed
from hosts import SEED_PROFILE, Bar, Function, HostSpec, demo_host
from test_actions_modprobe_remove import PROFILE as NVIDIA_STACK
from test_actions_modprobe_remove import nvidia_host as nvidia_stack_host

from passthrough.cli import main

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


def kinds_for(point: str) -> tuple[str, ...]:
    if point.startswith("modprobe"):
        return ("command", "deadline", "kill")
    if point.startswith("libvirt"):
        return ("libvirt", "deadline", "kill")
    if point == "bus/pci/drivers_probe" or point.endswith("/bind"):
        return WRITE_KINDS + ("nobind",)
    return WRITE_KINDS


class Case:
    """One fake kernel at its own root, with the profile, driven through main()."""

    count = 0

    def __init__(self, fs, shape: str):
        Case.count += 1
        spec, text = CASES[shape]
        self.kernel = FakeKernel(fs, spec(), root=f"/hosts/{Case.count}")
        self.root = self.kernel.root
        profiles = self.root / "profiles"
        profiles.mkdir()
        (profiles / "win10.yaml").write_text(text)
        self.start = self.kernel.snapshot()

    def run(self, *args: str, fault: tuple[int, str] | None = None) -> tuple[int | str, str]:
        """One hook run; `fault` = (index of the injection point in this run, kind)."""
        self.kernel.points.clear()
        self.kernel.fail_nth = fault
        out, err = io.StringIO(), io.StringIO()
        options = [
            "--root",
            str(self.root),
            "--state-dir",
            f"{self.root}/run",
            "--log-file",
            f"{self.root}/hook.log",
        ]
        argv = (
            ["recover", *options, "win10"]
            if args == ("recover",)
            else ["--config-dir", f"{self.root}/profiles", *options, "win10", *args, "-"]
        )
        try:
            code = main(
                argv, stdin=io.StringIO(""), host_factory=self.kernel.host, out=out, err=err
            )
        except Killed:
            code = "killed"
        finally:
            self.kernel.fail_nth = None
            self.kernel.release_hang.set()
        return code, out.getvalue() + err.getvalue()


def clean_points(fs, shape: str) -> tuple[list[str], list[str], dict]:
    case = Case(fs, shape)
    assert case.run("prepare", "begin")[0] == 0
    prepare_points, prepared = list(case.kernel.points), case.kernel.snapshot()
    assert case.run("release", "end")[0] == 0
    assert case.kernel.snapshot() == case.start
    return prepare_points, list(case.kernel.points), prepared


def injections(points: list[str], exhaustive: bool) -> list[tuple[int, str, str]]:
    """(index, point, kind): every kind at every point, or one kind per point, taking the
    kinds in turn so that the sample still meets each kind at many points."""
    if exhaustive:
        return [(i, point, kind) for i, point in enumerate(points) for kind in kinds_for(point)]
    return [
        (i, point, kinds_for(point)[i % len(kinds_for(point))]) for i, point in enumerate(points)
    ]


EXHAUSTIVE = [
    pytest.param(True, marks=pytest.mark.slow, id="all-kinds"),
    pytest.param(False, id="sample"),
]


@pytest.mark.parametrize("exhaustive", EXHAUSTIVE)
@pytest.mark.parametrize("shape", sorted(CASES))
def test_every_fault_in_prepare_is_rolled_back(fs, shape, exhaustive, record_property):
    points, _, prepared = clean_points(fs, shape)
    problems, covered = [], 0
    for index, point, kind in injections(points, exhaustive):
        case = Case(fs, shape)
        code, text = case.run("prepare", "begin", fault=(index, kind))
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
        if Path(f"{case.root}/run/win10.json").exists():
            problems.append(f"{point} {kind}: journal left behind")
        covered += 1
    record_property("injection_points", covered)
    print(f"\n{shape}: prepare: {covered} injections at {len(points)} points, host restored in all")
    assert not problems, "\n".join(problems)
    assert covered >= (3 if exhaustive else 1) * len(points)


@pytest.mark.parametrize("exhaustive", EXHAUSTIVE)
@pytest.mark.parametrize("shape", sorted(CASES))
def test_every_fault_in_release_is_recovered(fs, shape, exhaustive, record_property):
    _, points, _ = clean_points(fs, shape)
    problems, covered = [], 0
    for index, point, kind in injections(points, exhaustive):
        case = Case(fs, shape)
        assert case.run("prepare", "begin")[0] == 0
        code, text = case.run("release", "end", fault=(index, kind))
        if code != 0:
            code, text = case.run("recover")
        if code != 0 or case.kernel.snapshot() != case.start:
            problems.append(
                f"{point} {kind}: not restored after recover (exit {code}): {text[-400:]}"
            )
        covered += 1
    record_property("injection_points", covered)
    print(f"\n{shape}: release: {covered} injections at {len(points)} points, host restored in all")
    assert not problems, "\n".join(problems)
