"""The host driver stack, the holders of the card, and the AMD reset bug workaround, on a
real kernel (one boot, the hook run as libvirt runs it; helpers: scenario_lib.sh):

  holders       a process holds the guest GPU's /dev/dri/card0; kill_holders ends it before
                the detach unbinds bochs-drm, release gives both functions back
  driver stack  `modprobe: {remove: [bochs, snd_hda_intel]}` with both functions in the
                profile: the real modprobe -r leaves them driverless (and takes bochs's
                unused DRM helpers along), the detach binds vfio-pci; release loads the
                stack back and the kernel's probe puts them on their drivers again; a
                process holding the card makes the unload refuse, naming it
  remove/rescan the release of a detached pair ends with remove_rescan: the functions
                really leave the bus (their sysfs directories are gone), the rescan finds
                them and their drivers probe them (reset_method is tested on the fake
                kernel only: neither function of the guest's card has one)

A snapshot (scenario_lib.sh) is every function's driver and override, the loaded modules
and the journal: "as it began" means the whole machine.
"""

from __future__ import annotations

import pytest
from harness import GPU_AUDIO, GPU_AUDIO_DRIVER, GPU_VIDEO, GPU_VIDEO_DRIVER, GuestRun

pytestmark = pytest.mark.guest

DEVICES = f'devices: {{gpu: "{GPU_VIDEO}", gpu-audio: "{GPU_AUDIO}"}}\n'

HOLDERS_PROFILE = (
    DEVICES
    + """\
prepare/begin:
  - kill_holders: {device: gpu, allow: [sleep]}
  - modprobe: [vfio_pci]
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
"""
)

STACK_PROFILE = (
    DEVICES
    + """\
prepare/begin:
  - modprobe: {remove: [bochs, snd_hda_intel]}
  - modprobe: [vfio_pci]
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
"""
)

RESCAN_PROFILE = (
    DEVICES
    + """\
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
release/end:
  - undo: prepare/begin
  - remove_rescan: [gpu, gpu-audio]
"""
)

SCENARIO = r"""
source "$PROJECT/tests/guest/scenario_lib.sh"
echo 0 >/sys/module/snd_hda_intel/parameters/power_save
drivers() { echo "$(basename "$(readlink $dev/$GPU_VIDEO/driver)" 2>/dev/null || echo none) $(basename "$(readlink $dev/$GPU_AUDIO/driver)" 2>/dev/null || echo none)"; }
refcnt() { cat /sys/module/$1/refcnt 2>/dev/null || echo absent; }
snapshot initial
fact initial.modules "$(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
fact initial.bochs.holders "$(ls /sys/module/bochs/holders | tr '\n' ' ')"
fact initial.bochs.refcnt "$(refcnt bochs)"
fact initial.bochs.driver_module "$(basename "$(readlink /sys/bus/pci/drivers/bochs-drm/module)")"

# --- holders: a process with the card open, ended by the profile before the unbind ---------
profile "$HOLDERS"
sleep 1000 </dev/dri/card0 &
sleeper=$!
fact holders.refcnt "$(refcnt bochs)"
hook holders-prepare prepare begin
fact holders.sleeper "$(kill -0 $sleeper 2>/dev/null && echo running || echo ended)"
fact holders.prepared "$(drivers)"
hook holders-release release end
fact holders.released "$(drivers)"
snapshot holders-released

# --- the driver stack: refused while the card is open, then unloaded and loaded back -------
profile "$STACK"
sleep 1000 </dev/dri/card0 &
sleeper=$!
hook stack-refused prepare begin
kill $sleeper; wait $sleeper 2>/dev/null
snapshot stack-refused
hook stack-dryrun prepare begin --dry-run
snapshot stack-after-dryrun
hook stack-prepare prepare begin
fact stack.prepared "$(drivers)"
fact stack.prepared.modules "$(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
cp "$STATE/$DOMAIN.json" "$OUT/stack-journal.json"
hook stack-release release end
fact stack.released "$(drivers)"
snapshot stack-released

# --- remove and rescan on release ------------------------------------------------------------
profile "$RESCAN"
hook rescan-prepare prepare begin
dmesg -C
hook rescan-release release end
fact rescan.released "$(drivers)"
dmesg >"$OUT/rescan-dmesg.txt"
snapshot rescan-released
cp "$HOOK_LOG" "$OUT/hook.log"
"""


def _script() -> str:
    head = ""
    for name, text in (
        ("HOLDERS", HOLDERS_PROFILE),
        ("STACK", STACK_PROFILE),
        ("RESCAN", RESCAN_PROFILE),
    ):
        head += f"{name}=$(cat <<'PROFILE'\n{text}PROFILE\n)\n"
    return head + SCENARIO


class Boot:
    def __init__(self, run: GuestRun):
        assert run.returncode == 0, f"scenario failed ({run.returncode}):\n{run.output}"
        self.run = run
        self.facts = dict(line.split("=", 1) for line in run.text("facts").splitlines())

    def snapshot(self, name: str) -> str:
        return self.run.text(f"snap/{name}")

    def hook(self, name: str) -> tuple[int, str]:
        return int(self.facts[f"{name}.rc"]), self.run.text(f"{name}.out") + self.run.text(
            f"{name}.err"
        )


@pytest.fixture(scope="module")
def boot(guest, tmp_path_factory) -> Boot:
    return Boot(guest(_script(), iommu=True, timeout=420, run_dir=tmp_path_factory.mktemp("stack")))


HOST_DRIVERS = f"{GPU_VIDEO_DRIVER} {GPU_AUDIO_DRIVER}"


def test_a_process_holding_the_card_is_ended_before_the_unbind_and_release_restores(boot):
    code, text = boot.hook("holders-prepare")
    assert code == 0, text
    assert boot.facts["holders.refcnt"] == str(int(boot.facts["initial.bochs.refcnt"]) + 1)
    assert boot.facts["holders.sleeper"] == "ended"
    assert boot.facts["holders.prepared"] == "vfio-pci vfio-pci"
    assert boot.hook("holders-release")[0] == 0
    assert boot.facts["holders.released"] == HOST_DRIVERS
    assert boot.snapshot("holders-released") == boot.snapshot("initial")


def test_the_driver_stack_is_refused_while_a_process_holds_the_card(boot):
    code, text = boot.hook("stack-refused")
    assert code == 1
    assert "sleep (pid " in text and f"holds /dev/dri/card0 of {GPU_VIDEO}" in text
    assert boot.snapshot("stack-refused") == boot.snapshot("initial")


def test_the_dry_run_shows_the_unloads_and_the_devices_they_leave_driverless(boot):
    code, text = boot.hook("stack-dryrun")
    assert code == 0, text
    assert "modprobe -r bochs   [bochs: loaded → not loaded]" in text
    assert f"check {GPU_VIDEO} driver   [bochs-drm → no driver (gpu ({GPU_VIDEO}))]" in text
    assert (
        f"check {GPU_AUDIO} driver   [snd_hda_intel → no driver (gpu-audio ({GPU_AUDIO}))]" in text
    )
    assert f"check {GPU_VIDEO} driver   [no driver → vfio-pci]" in text
    assert boot.snapshot("stack-after-dryrun") == boot.snapshot("initial")


def test_the_real_modprobe_r_leaves_the_pair_driverless_and_release_loads_it_back(boot):
    assert boot.facts["initial.bochs.driver_module"] == "bochs"
    code, text = boot.hook("stack-prepare")
    assert code == 0, text
    assert boot.facts["stack.prepared"] == "vfio-pci vfio-pci"
    prepared = set(boot.facts["stack.prepared.modules"].split())
    assert "bochs" not in prepared and "snd_hda_intel" not in prepared
    log = boot.run.text("hook.log")
    # The DRM helpers only bochs used went with it, as kmod does; they are journaled.
    assert "modprobe -r removes drm_vram_helper too" in log
    code, text = boot.hook("stack-release")
    assert code == 0, text
    assert boot.facts["stack.released"] == HOST_DRIVERS
    assert boot.snapshot("stack-released") == boot.snapshot("initial")


def test_remove_rescan_really_removes_and_rediscovers_the_pair(boot):
    code, text = boot.hook("rescan-prepare")
    assert code == 0, text
    code, text = boot.hook("rescan-release")
    assert code == 0, text
    dmesg = boot.run.text("rescan-dmesg.txt")
    # The kernel enumerated both functions again ("pci 0000:01:00.0: [1234:1111] type 00").
    assert f"pci {GPU_VIDEO}: [1234:1111]" in dmesg and f"pci {GPU_AUDIO}: [8086:293e]" in dmesg
    assert boot.facts["rescan.released"] == HOST_DRIVERS
    assert boot.snapshot("rescan-released") == boot.snapshot("initial")
    log = boot.run.text("hook.log")
    assert f"write 1 > /sys/bus/pci/devices/{GPU_VIDEO}/remove" in log
    assert f"check {GPU_AUDIO} driver   [back → {GPU_AUDIO_DRIVER}]" in log
