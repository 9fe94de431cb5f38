"""A `modprobe -r` or a libvirt node-device call stuck in the kernel (tests/fakekernel.py's
"stuck" fault): treated as a stuck device write. The hook returns, names what is stuck and
what holds it, journals it with the helper's pid, touches it no more in that run and rolls
back the rest; `status` shows it, `recover` refuses until the helper is gone, then puts
everything back."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from fakekernel import FakeKernel
from hosts import demo_host
from runs import STATE, command, hook, recover
from test_actions_modprobe_remove import GPU, STACK, nvidia_host
from test_json_output import one_document

from passthrough.errors import HostError, StepTimeout
from passthrough.host import Host, detached
from passthrough.host.libvirt import NodeDevices

REPO = Path(__file__).resolve().parent.parent
SEED_GPU, SEED_AUDIO = "0000:03:00.0", "0000:03:00.1"


def status(json_output: bool = False) -> tuple[int, str]:
    argv = ["status", "--root", "/host", "--state-dir", STATE, *(["--json"] if json_output else [])]
    result = command(*argv)
    return result.code, result.text


@pytest.fixture
def make(fs):
    fs.add_real_directory(str(REPO / "passthrough"), read_only=True)
    fs.add_real_directory(str(REPO / "config"), read_only=True)

    def make_kernel(spec):
        kernel = FakeKernel(fs, spec)
        kernel.stuck_wait = 0.3  # it never returns: how long the hook waits changes nothing
        return kernel

    return make_kernel


def test_a_stuck_module_unload_is_journaled_shown_and_recovered(make):
    """Unloading nvidia_uvm takes nvidia along, which unbinds the card a process has open
    (`force: true` went past the holder check): modprobe -r does not return."""
    kernel = make(nvidia_host())
    start = kernel.snapshot()
    mapped = kernel.hold_open(4321, "nvidia-smi", GPU)
    kernel.fail("modprobe -r nvidia_uvm", "stuck")
    profile = textwrap.dedent(
        f"""\
        devices: {{gpu: "{GPU}", gpu-audio: "0000:01:00.1"}}
        prepare/begin:
          - modprobe: {{remove: [{", ".join(STACK)}]}}
            force: true
          - detach: {{devices: [gpu, gpu-audio], via: sysfs}}
        """
    )
    try:
        code, out, err = hook(kernel, "prepare", "begin", profile=profile)
        assert code == 1, err
        pid = kernel.helpers[0]
        said = " ".join(err.split())
        assert (
            f"`modprobe -r nvidia_uvm` did not return within 0.3 s: it is stuck in the kernel "
            f"(helper pid {pid} still waits there); it was unbinding {GPU}" in said
        )
        assert f"still open: nvidia-smi (pid 4321) holds {mapped} of {GPU}" in said
        assert (
            f"STUCK: module nvidia_uvm: `modprobe -r nvidia_uvm` has not returned (helper pid "
            f"{pid} waits in the kernel, unbinding {GPU}); the module was not loaded or "
            f"unloaded again." in said
        )
        # The rest of the step's undo went on: what modprobe -r had removed before is back.
        assert {"nvidia_drm", "nvidia_modeset"} <= kernel.modules
        assert "not going to load nvidia_uvm back: `modprobe -r nvidia_uvm` is stuck" in said
        assert kernel.writes_on_stuck == []
        journal = json.loads(Path(STATE, "win10.json").read_text())
        record = journal["stuck"]["module nvidia_uvm"]
        assert (record["module"], record["pid"], record["devices"]) == ("nvidia_uvm", pid, [GPU])
        assert record["modules"] == ["nvidia_uvm", "nvidia"]

        code, text = status()
        shown = " ".join(text.split())
        assert code == 1
        assert (
            "PROBLEM (stuck): module nvidia_uvm: `modprobe -r nvidia_uvm` is stuck in the "
            "kernel since " in shown
        )
        assert f"(helper pid {pid}, state S): unloading it unbinds {GPU}" in shown
        [win10] = one_document(status(json_output=True)[1])["domains"]
        [problem] = [p for p in win10["problems"] if p["kind"] == "stuck"]
        assert (problem["module"], problem["address"], problem["helper"]) == (
            "nvidia_uvm",
            None,
            pid,
        )

        code, out, err = recover(kernel)
        text = out + err
        assert code == 1
        assert "not recovering win10 yet: module nvidia_uvm is still stuck in the kernel" in text
        assert "nvidia-smi (pid 4321)" in text
        assert kernel.writes_on_stuck == []
    finally:
        kernel.release_stuck()  # the process let go: the kernel finishes the unload
    code, out, err = recover(kernel)
    text = out + err
    assert code == 0, text
    assert kernel.snapshot() == start
    assert not Path(STATE, "win10.json").exists()


def test_a_stuck_libvirt_detach_marks_the_device_and_the_other_goes_back(make):
    """libvirtd's detach of the audio function waits in the kernel's unbind: the hook stops
    waiting, the GPU detached before is reattached, nothing more goes to the audio function."""
    kernel = make(demo_host())
    start = kernel.snapshot()
    kernel.fail(f"libvirt detach {SEED_AUDIO}", "stuck")
    profile = textwrap.dedent(
        f"""\
        devices: {{gpu: "{SEED_GPU}", gpu-audio: "{SEED_AUDIO}"}}
        prepare/begin:
          - modprobe: [vfio_pci]
          - detach: [gpu, gpu-audio]
        """
    )
    try:
        code, out, err = hook(kernel, "prepare", "begin", profile=profile)
        assert code == 1, err
        pid = kernel.helpers[0]
        said = " ".join(err.split())
        assert (
            f"{SEED_AUDIO}: libvirt detach of {SEED_AUDIO} did not return within 0.3 s: "
            f"libvirtd is likely waiting in the kernel's unbind of the device (helper pid {pid} "
            "waits for its answer)" in said
        )
        assert f"STUCK: {SEED_AUDIO}: `libvirt nodedev-detach pci_0000_03_00_1` has not" in said
        now = kernel.snapshot()
        assert now[SEED_GPU] == start[SEED_GPU]  # reattached
        assert f"libvirt reattach {SEED_GPU}" in kernel.points
        assert f"libvirt reattach {SEED_AUDIO}" not in kernel.points  # nothing more tried
        journal = json.loads(Path(STATE, "win10.json").read_text())
        record = journal["stuck"][SEED_AUDIO]
        assert (record["pid"], record["driver"]) == (pid, "snd_hda_intel")

        code, text = status()
        assert code == 1
        assert (
            f"PROBLEM (stuck): {SEED_AUDIO}: `libvirt nodedev-detach pci_0000_03_00_1` is stuck"
            in " ".join(text.split())
        )
        code, out, err = recover(kernel)
        text = out + err
        assert code == 1
        assert f"not recovering win10 yet: {SEED_AUDIO} is still stuck in the kernel" in text
    finally:
        kernel.release_stuck()  # libvirtd's detach finishes
    assert kernel.override(SEED_AUDIO) == "vfio-pci"
    code, out, err = recover(kernel)
    text = out + err
    assert code == 0, text
    assert kernel.snapshot() == start


# --- the real node-device calls, with a stand-in libvirt module -------------------------------

STAND_IN = """\
import io, os

class libvirtError(Exception):
    def get_error_message(self):
        return str(self)

def registerErrorHandler(handler, ctx):
    pass

class Device:
    def __init__(self, name):
        self.name = name
    def detachFlags(self, driver, flags):
        if self.name.endswith("_1"):
            raise libvirtError("Requested operation is not valid: PCI device is in use")
        with io.open(os.environ["STAND_IN_FIFO"], "w"):  # blocks: nobody reads it
            pass
    def reAttach(self):
        with io.open(os.environ["STAND_IN_LOG"], "a") as log:
            log.write(f"reattach {self.name}\\n")

class Connection:
    def nodeDeviceLookupByName(self, name):
        if name.endswith("_2"):
            raise libvirtError(f"Node device not found: no node device with matching name '{name}'")
        return Device(name)

def open(uri):
    return Connection()
"""


def test_the_real_calls_run_in_a_helper_with_its_own_stdio(tmp_path, monkeypatch):
    (tmp_path / "libvirt.py").write_text(STAND_IN)
    fifo = tmp_path / "unbind"
    os.mkfifo(fifo)
    monkeypatch.setenv("STAND_IN_FIFO", str(fifo))
    monkeypatch.setenv("STAND_IN_LOG", str(tmp_path / "calls.log"))
    host = Host(root=Path("/"), operation_timeout=30.0)
    host.sysfs = _NoSysfs()  # type: ignore[assignment]
    nodedev = NodeDevices(Path("/"), host)
    nodedev.python_path = [str(tmp_path)]

    nodedev.reattach("0000:03:00.0", "")
    assert (tmp_path / "calls.log").read_text().splitlines() == ["reattach pci_0000_03_00_0"]
    with pytest.raises(HostError, match="0000:03:00.1: libvirt detach failed: Requested operation"):
        nodedev.detach("0000:03:00.1", "vfio", "")
    with pytest.raises(HostError, match="no node device with matching name 'pci_0000_03_00_2'"):
        nodedev.detach("0000:03:00.2", "vfio", "")

    host.operation_timeout = 0.5  # it never answers: how long we wait changes nothing
    with pytest.raises(StepTimeout) as caught:
        nodedev.detach("0000:03:00.0", "vfio", "")
    pid = host.stuck["0000:03:00.0"]["pid"]
    try:
        assert (
            f"libvirtd is likely waiting in the kernel's unbind of the device (helper pid {pid}"
            in str(caught.value)
        )
        assert host.stuck["0000:03:00.0"]["write"] == "libvirt nodedev-detach pci_0000_03_00_0"
        # Its own session; stdin on /dev/null, stdout and stderr on its own pipe, not ours.
        assert os.getsid(pid) == pid
        fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)}
        assert fds[0] == "/dev/null"
        assert fds[1] == fds[2] and fds[1].startswith("pipe:")
        assert fds[1] not in {os.readlink(f"/proc/self/fd/{fd}") for fd in (1, 2)}
        with pytest.raises(HostError, match="not going to reattach it through libvirt"):
            nodedev.reattach("0000:03:00.0", "")
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # the kernel lets go
    assert _ends(pid)


class _NoSysfs:
    def link_name(self, rel: str) -> str | None:
        return "snd_hda_intel"


def _ends(pid: int) -> bool:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if detached.process_state(stat, None) == "gone":
            return True
        time.sleep(0.05)
    return False
