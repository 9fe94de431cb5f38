"""The real `passthrough-hook` program, run as libvirt runs its hook, against a real kernel's /sys.

Two boots, each a batch of scenarios whose facts and snapshots land in $OUT
(helpers: scenario_lib.sh); the tests below assert on them:

  main boot (IOMMU, ReBAR)  dry run; the seed profile adapted to the guest (modprobe +
                            detach via sysfs) prepared and released 20 times; the same
                            work done by a bare bash script, for the timing ratios; then
                            resize_bar on the emulated Resizable BAR of REBAR_DEVICE
  no-IOMMU boot             vfio-pci's probe fails while drivers_probe reports success:
                            prepare must notice, roll back and say so

A snapshot is every PCI function's driver and driver_override, the loaded modules and
whether a journal exists, so "restored" means the whole machine, not just the GPU.
"""

from __future__ import annotations

import json
import statistics

import pytest
from harness import (
    GPU_AUDIO,
    GPU_AUDIO_DRIVER,
    GPU_VIDEO,
    GPU_VIDEO_DRIVER,
    HARNESS_DEVICES,
    REBAR_BAR,
    REBAR_DEFAULT_MIB,
    REBAR_DEVICE,
    REBAR_DRIVER,
    REBAR_SUPPORTED_MIB,
    GuestRun,
)

pytestmark = pytest.mark.guest

CYCLES = 20
BARE_RUNS = 5  # spread evenly among the cycles
assert CYCLES % BARE_RUNS == 0
VFIO_MODULES = ("vfio", "vfio_iommu_type1", "vfio_pci")
REBAR_TO_MIB = 64
REBAR_UNSUPPORTED_MIB = 512
assert REBAR_TO_MIB in REBAR_SUPPORTED_MIB and REBAR_UNSUPPORTED_MIB not in REBAR_SUPPORTED_MIB

# The seed profile (config/win10.yaml) on the guest's card; the libvirt detach route is
# covered elsewhere, and the bochs BAR is not resizable (REBAR_DEVICE's scenario is below).
SEED_PROFILE = f"""\
devices:
  gpu: "{GPU_VIDEO}"
  gpu-audio: "{GPU_AUDIO}"

prepare/begin:
  - modprobe: [{", ".join(VFIO_MODULES)}]
  - detach: {{devices: [gpu, gpu-audio], via: sysfs}}
"""

# Names only REBAR_DEVICE: its driver, virtio-pci, also drives the guest's own 9p devices.
REBAR_PROFILE = """\
devices:
  rebar-dev: "{address}"

prepare/begin:
  - resize_bar: {{device: rebar-dev, bar: {bar}, size: {mib}MiB}}
"""


def _script(body: str, **profiles: str) -> str:
    """Source the helpers, then define each profile as a bash variable (quoted heredoc)."""
    head = 'source "$PROJECT/tests/guest/scenario_lib.sh"\n'
    for name, text in profiles.items():
        head += f"{name}=$(cat <<'PROFILE'\n{text}PROFILE\n)\n"
    return head + body


SEED_SCENARIO = (
    f"CYCLES={CYCLES} BARE_RUNS={BARE_RUNS}\n"
    + r"""
# bare_run N: prepare and release the card by bare_rebind.sh, timed.  What it loaded is
# listed outside the timed runs, so its release unloads as much as the hook's does.
bare_run() {
    local n=$1 start loaded
    cut -d' ' -f1 /proc/modules | sort >/tmp/modules.before
    start=$(now)
    bash "$PROJECT/tests/guest/bare_rebind.sh" prepare "$GPU_VIDEO" "$GPU_AUDIO" >"$OUT/bare/$n-prepare.out" 2>&1
    fact "bare/$n-prepare.seconds" "$(elapsed "$start" "$(now)")"
    snapshot "bare$n-prepared"
    loaded=$(cut -d' ' -f1 /proc/modules | sort | comm -13 /tmp/modules.before - |
             grep -vx -e vfio_pci -e vfio_iommu_type1 -e vfio)
    start=$(now)
    bash "$PROJECT/tests/guest/bare_rebind.sh" release "$GPU_AUDIO" "$GPU_VIDEO" -- \
        vfio_pci vfio_iommu_type1 vfio $loaded >"$OUT/bare/$n-release.out" 2>&1
    fact "bare/$n-release.seconds" "$(elapsed "$start" "$(now)")"
    snapshot "bare$n-released"
}

# With codec power saving on, an unbind that meets snd_hda_intel's delayed codec
# power-down waits ~0.6 s for it: noise of up to 20x in the timings, by luck of timing.
echo 0 >/sys/module/snd_hda_intel/parameters/power_save
profile "$SEED"
snapshot initial
mkdir -p "$OUT/bare"

# Dry run before anything is prepared, then a real prepare, a dry run of the
# release while prepared, and the real release: cycle 1 of CYCLES.  The bare
# script's runs are spread among the cycles, so both see the same machine load.
hook dryrun-prepare prepare begin --dry-run
snapshot after-dryrun-prepare
for i in $(seq 1 "$CYCLES"); do
    n=$(printf %02d "$i")
    hook "cycle/$n-prepare" prepare begin --json
    snapshot "cycle$n-prepared"
    if [ "$i" = 1 ]; then
        group=$(iommu_group "$GPU_VIDEO")
        fact group.members $(ls "$dev/$GPU_VIDEO/iommu_group/devices")
        fact group.status "$(python3 "$PROJECT/tests/guest/vfio_group_status.py" "$group")"
        cp "$STATE/$DOMAIN.json" /tmp/journal.before
        hook dryrun-release release end --dry-run --json
        snapshot after-dryrun-release
        fact dryrun-release.journal "$(cmp -s /tmp/journal.before "$STATE/$DOMAIN.json" && echo unchanged || echo changed)"
    fi
    hook "cycle/$n-release" release end --json
    snapshot "cycle$n-released"
    if [ $((i % (CYCLES / BARE_RUNS))) = 0 ]; then bare_run "$(printf %02d $((i / (CYCLES / BARE_RUNS))))"; fi
done

python3 "$PROJECT/tests/guest/step_timings.py" "$OUT" "$CYCLES" "$BARE_RUNS"
"""
)

KILLED_PROFILE = f"""\
devices: {{gpu: "{GPU_VIDEO}", gpu-audio: "{GPU_AUDIO}"}}
prepare/begin:
  - unbind: [gpu, gpu-audio]
  - command: [/usr/bin/sleep, "60"]
    timeout: 120
"""

NO_IOMMU_SCENARIO = _script(
    r"""
profile "$SEED"
snapshot initial
hook rollback-prepare prepare begin
snapshot after-failed-prepare
# libvirt calls release/end after a failed prepare too.
hook rollback-release release end
snapshot after-release

# kill -9 mid-prepare: both functions unbound (the black-screen state the bash hooks
# leave), the hook killed while a later step runs; recover must bring both back.
profile "$KILLED"
echo "<domain/>" | env -i LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH="$PROJECT" \
    /usr/bin/python3 -m passthrough --config-dir "$PROFILES" --state-dir "$STATE" \
    --log-file "$HOOK_LOG" "$DOMAIN" prepare begin - >"$OUT/killed.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    grep -Eq '"action": ?"command"' "$STATE/$DOMAIN.json" 2>/dev/null && break
    sleep 0.05
done
kill -9 "$pid"
wait "$pid"
fact killed.rc "$?"
pkill -x sleep  # the step's own child outlives the hook
snapshot after-kill
env -i LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH="$PROJECT" /usr/bin/python3 -m passthrough \
    recover --state-dir "$STATE" --log-file "$HOOK_LOG" "$DOMAIN" >"$OUT/recover.out" 2>"$OUT/recover.err"
fact recover.rc "$?"
snapshot after-recover
""",
    SEED=SEED_PROFILE,
    KILLED=KILLED_PROFILE,
)

REBAR_SCENARIO = (
    f"BAR={REBAR_BAR}\n"
    + r"""
status() { cat "$dev/$REBAR_DEVICE"/virtio*/status; }
snapshot rebar-initial
fact bar.initial "$(bar_mib "$REBAR_DEVICE" "$BAR")"
fact virtio.initial "$(status)"

profile "$UNSUPPORTED"
hook rebar-unsupported prepare begin
snapshot rebar-after-unsupported
fact bar.after_unsupported "$(bar_mib "$REBAR_DEVICE" "$BAR")"

profile "$SUPPORTED"
hook rebar-prepare prepare begin --json
snapshot rebar-prepared
fact bar.prepared "$(bar_mib "$REBAR_DEVICE" "$BAR")"
# virtio-pci reset the device and acknowledged it through BAR 4 at its new place.
fact virtio.prepared "$(status)"
hook rebar-release release end --json
snapshot rebar-released
fact bar.released "$(bar_mib "$REBAR_DEVICE" "$BAR")"
fact virtio.released "$(status)"
"""
)

MAIN_SCENARIO = _script(
    SEED_SCENARIO + REBAR_SCENARIO,
    SEED=SEED_PROFILE,
    SUPPORTED=REBAR_PROFILE.format(address=REBAR_DEVICE, bar=REBAR_BAR, mib=REBAR_TO_MIB),
    UNSUPPORTED=REBAR_PROFILE.format(
        address=REBAR_DEVICE, bar=REBAR_BAR, mib=REBAR_UNSUPPORTED_MIB
    ),
)


# --- reading what a boot left -----------------------------------------------------------------


class Boot:
    """The facts, snapshots and hook outputs one boot wrote under $OUT."""

    def __init__(self, run: GuestRun):
        assert run.returncode == 0, f"scenario failed ({run.returncode}):\n{run.output}"
        self.run = run
        self.facts = dict(line.split("=", 1) for line in run.text("facts").splitlines())

    def snapshot(self, name: str) -> str:
        return self.run.text(f"snap/{name}")

    def drivers(self, name: str) -> dict[str, tuple[str, str]]:
        """address -> (driver, driver_override) in a snapshot."""
        found = {}
        for line in self.snapshot(name).splitlines():
            address, *fields = line.split(" ")
            if address.count(":") == 2:
                values = dict(f.split("=", 1) for f in fields)
                found[address] = (values["driver"], values["override"])
        return found

    def hook(self, name: str) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of a hook run."""
        return (
            int(self.facts[f"{name}.rc"]),
            self.run.text(f"{name}.out"),
            self.run.text(f"{name}.err"),
        )

    def hook_json(self, name: str) -> dict:
        code, out, err = self.hook(name)
        assert code == 0, f"{name} exited {code}:\n{err}{out}"
        return json.loads(out)


def operations(result: dict) -> list[str]:
    return [
        op["operation"]
        for step in result["steps"] + result["rollback"]
        for op in step["operations"]
    ]


@pytest.fixture(scope="module")
def main_boot(guest, tmp_path_factory) -> Boot:
    return Boot(
        guest(
            MAIN_SCENARIO,
            iommu=True,
            rebar=True,
            timeout=600,
            run_dir=tmp_path_factory.mktemp("main"),
        )
    )


# The seed and ReBAR scenarios share the main boot; the names say which part a test reads.
@pytest.fixture
def seed(main_boot) -> Boot:
    return main_boot


@pytest.fixture
def rebar(main_boot) -> Boot:
    return main_boot


@pytest.fixture(scope="module")
def no_iommu(guest, tmp_path_factory) -> Boot:
    return Boot(
        guest(
            NO_IOMMU_SCENARIO, iommu=False, timeout=300, run_dir=tmp_path_factory.mktemp("no-iommu")
        )
    )


# --- the seed profile ---------------------------------------------------------------------------


def test_the_guest_starts_with_the_card_on_its_own_drivers(seed):
    drivers = seed.drivers("initial")
    assert drivers[GPU_VIDEO] == (GPU_VIDEO_DRIVER, "(null)")
    assert drivers[GPU_AUDIO] == (GPU_AUDIO_DRIVER, "(null)")
    assert not set(VFIO_MODULES) & set(seed.snapshot("initial").split())


def test_seed_prepare_binds_video_and_audio_to_vfio(seed):
    result = seed.hook_json("cycle/01-prepare")
    assert result["ok"] and [s["status"] for s in result["steps"]] == ["done", "done"]
    drivers = seed.drivers("cycle01-prepared")
    assert drivers[GPU_VIDEO] == ("vfio-pci", "vfio-pci")
    assert drivers[GPU_AUDIO] == ("vfio-pci", "vfio-pci")
    assert set(VFIO_MODULES) <= set(seed.snapshot("cycle01-prepared").split())
    assert "journal present" in seed.snapshot("cycle01-prepared")


def test_seed_prepare_leaves_a_viable_vfio_group(seed):
    """The kernel agrees the card can be assigned: its whole IOMMU group is on vfio."""
    assert seed.facts["group.members"] == f"{GPU_VIDEO} {GPU_AUDIO}"
    assert seed.facts["group.status"] == "viable container_set=no"


def test_seed_release_returns_both_functions_and_the_whole_machine(seed):
    result = seed.hook_json("cycle/01-release")
    assert result["ok"] and [s["status"] for s in result["rollback"]] == ["undone", "undone"]
    drivers = seed.drivers("cycle01-released")
    assert drivers[GPU_VIDEO] == (GPU_VIDEO_DRIVER, "(null)")
    assert drivers[GPU_AUDIO] == (GPU_AUDIO_DRIVER, "(null)")
    assert seed.snapshot("cycle01-released") == seed.snapshot("initial")  # modules and journal too


def test_twenty_cycles_leave_nothing_behind(seed):
    initial = seed.snapshot("initial")
    driverless = {a for a, (driver, _) in seed.drivers("initial").items() if driver == "none"}
    for n in range(1, CYCLES + 1):
        for phase in ("prepare", "release"):
            code, _, err = seed.hook(f"cycle/{n:02d}-{phase}")
            assert code == 0, f"cycle {n} {phase} exited {code}:\n{err}"
        prepared = seed.drivers(f"cycle{n:02d}-prepared")
        assert prepared[GPU_VIDEO][0] == prepared[GPU_AUDIO][0] == "vfio-pci", f"cycle {n}"
        released = seed.drivers(f"cycle{n:02d}-released")
        assert {a for a, (d, _) in released.items() if d == "none"} == driverless, (
            f"cycle {n}: driverless"
        )
        assert {a for a, (_, o) in released.items() if o != "(null)"} == set(), (
            f"cycle {n}: stale override"
        )
        assert seed.snapshot(f"cycle{n:02d}-released") == initial, (
            f"cycle {n} did not restore everything"
        )


def test_dry_run_changes_nothing(seed):
    code, out, err = seed.hook("dryrun-prepare")
    assert code == 0, err + out
    assert f"[{GPU_VIDEO_DRIVER} → vfio-pci]" in out and f"[{GPU_AUDIO_DRIVER} → vfio-pci]" in out
    assert seed.snapshot("after-dryrun-prepare") == seed.snapshot("initial")
    assert seed.snapshot("after-dryrun-release") == seed.snapshot("cycle01-prepared")
    assert seed.facts["dryrun-release.journal"] == "unchanged"


def test_dry_run_shows_what_the_real_run_then_does(seed):
    """The plan is the real kernel's, not the model's idea of it: every operation of the
    real prepare appears in the dry run's plan, in order; the release plan has the real
    release's sysfs writes and checks and unloads vfio_pci."""
    plan = seed.hook("dryrun-prepare")[1]
    position = 0
    for op in operations(seed.hook_json("cycle/01-prepare")):
        position = plan.index(op, position) + len(op)  # ValueError: missing or out of order

    predicted = seed.hook_json("dryrun-release")
    real = seed.hook_json("cycle/01-release")
    assert predicted["dry_run"] and predicted["warnings"] == []

    def sysfs(result: dict) -> list[str]:
        return [op for op in operations(result) if not op.startswith("modprobe")]

    assert sysfs(predicted) == sysfs(real)
    assert "modprobe -r vfio_pci" in operations(predicted)


# --- timings --------------------------------------------------------------------------------------


def test_timings_hook_against_a_bare_script(seed, guest_report):
    for n in range(1, BARE_RUNS + 1):  # the baseline did the same work: it restored the machine too
        assert seed.drivers(f"bare{n:02d}-prepared")[GPU_VIDEO][0] == "vfio-pci", f"bare run {n}"
        assert seed.snapshot(f"bare{n:02d}-released") == seed.snapshot("initial"), f"bare run {n}"
    timings = json.loads(seed.run.text("timings.json"))
    section = f"guest timings (TCG, {timings['kernel']}; medians of {CYCLES} hook runs, {BARE_RUNS} script runs)"
    for phase in ("prepare", "release"):
        hook_runs = timings["hook"][phase]
        assert len(hook_runs) == CYCLES and len(timings["bare"][phase]) == BARE_RUNS
        assert all(0 < sum(s for _, s in run["steps"]) < run["wall"] for run in hook_runs)
        medians, ratios = timings["medians"][phase], timings["ratios"][phase]
        assert medians["hook_wall"] == statistics.median(run["wall"] for run in hook_runs)
        assert ratios["hook_wall"] == pytest.approx(medians["hook_wall"] / medians["bare_wall"])
        guest_report(
            section,
            f"{phase}: hook {medians['hook_wall']:.3f} s (steps {medians['hook_steps']:.3f} s), "
            f"bare script {medians['bare_wall']:.3f} s",
        )
        guest_report(
            section,
            f"    ratio hook / script: {ratios['hook_wall']:.2f} whole process, "
            f"{ratios['hook_steps']:.2f} steps only; rebind step / script's sysfs writes: "
            f"{ratios['rebind_step']:.2f} ({medians['rebind_step'] * 1000:.0f} ms / "
            f"{medians['bare_sysfs'] * 1000:.0f} ms)",
        )
        titles = [title for title, _ in hook_runs[0]["steps"]]
        for index, title in enumerate(titles):
            seconds = statistics.median(run["steps"][index][1] for run in hook_runs)
            guest_report(section, f"    {seconds * 1000:5.0f} ms  {title}")


# --- a real failure, rolled back ------------------------------------------------------------------


def test_failed_vfio_probe_is_detected_and_rolled_back(no_iommu):
    code, _, err = no_iommu.hook("rollback-prepare")
    assert code == 1, err
    assert (
        f"{GPU_VIDEO}: vfio-pci did not bind: the kernel accepted the probe but the device has "
        f"no driver"
    ) in err
    assert "failed at step 2. detach gpu, gpu-audio to vfio-pci via sysfs" in err
    assert f"Rolled back, newest first: restore gpu → {GPU_VIDEO_DRIVER}; unload vfio_pci" in err
    assert "Traceback" not in err
    # The trap was real: the kernel said yes to drivers_probe, then failed the probe.
    assert f"vfio-pci: probe of {GPU_VIDEO} failed with error -22" in no_iommu.run.dmesg
    assert no_iommu.snapshot("after-failed-prepare") == no_iommu.snapshot("initial")


def test_release_after_a_failed_prepare_changes_nothing(no_iommu):
    code, _, err = no_iommu.hook("rollback-release")
    assert code == 0, err
    assert no_iommu.snapshot("after-release") == no_iommu.snapshot("initial")


def test_killed_mid_prepare_is_recovered_on_the_real_kernel(no_iommu):
    """kill -9 while the devices are unbound; `passthrough-hook recover` rebinds them."""
    assert no_iommu.facts["killed.rc"] == "137"  # killed by SIGKILL, not finished
    stranded = no_iommu.drivers("after-kill")
    assert stranded[GPU_VIDEO][0] == "none" and stranded[GPU_AUDIO][0] == "none"
    assert "journal present" in no_iommu.snapshot("after-kill")
    assert no_iommu.facts["recover.rc"] == "0", no_iommu.run.text("recover.err")
    assert "undid 1 journaled change(s); nothing is left" in no_iommu.run.text("recover.out")
    assert no_iommu.snapshot("after-recover") == no_iommu.snapshot("initial")


# --- Resizable BAR --------------------------------------------------------------------------------


def test_rebar_unsupported_size_is_refused_with_the_supported_list(rebar):
    code, _, err = rebar.hook("rebar-unsupported")
    assert code == 1, err
    supported = ", ".join(f"{mib} MiB" for mib in REBAR_SUPPORTED_MIB)
    assert (
        f"{REBAR_DEVICE}: BAR {REBAR_BAR} does not support {REBAR_UNSUPPORTED_MIB} MiB; "
        f"supported sizes: {supported}"
    ) in err
    assert "Nothing had been changed" in err
    assert (
        int(rebar.facts["bar.after_unsupported"])
        == int(rebar.facts["bar.initial"])
        == REBAR_DEFAULT_MIB
    )
    assert rebar.snapshot("rebar-after-unsupported") == rebar.snapshot("rebar-initial")


def test_rebar_resize_unbinds_resizes_and_rebinds(rebar):
    assert (
        rebar.drivers("rebar-initial")[REBAR_DEVICE][0] == REBAR_DRIVER
    )  # bound: the kernel says EBUSY
    result = rebar.hook_json("rebar-prepare")
    ops = operations(result)
    exponent = REBAR_TO_MIB.bit_length() - 1
    device = f"/sys/bus/pci/devices/{REBAR_DEVICE}"
    unbind = ops.index(f"write {REBAR_DEVICE} > {device}/driver/unbind")
    resize = ops.index(f"write {exponent} > {device}/resource{REBAR_BAR}_resize")
    probe = ops.index(f"write {REBAR_DEVICE} > /sys/bus/pci/drivers_probe")
    assert unbind < resize < probe
    assert int(rebar.facts["bar.prepared"]) == REBAR_TO_MIB
    assert rebar.drivers("rebar-prepared")[REBAR_DEVICE] == (REBAR_DRIVER, "(null)")
    assert "journal present" in rebar.snapshot("rebar-prepared")
    assert rebar.facts["virtio.prepared"] == rebar.facts["virtio.initial"]
    for address in HARNESS_DEVICES:
        assert rebar.drivers("rebar-prepared")[address] == rebar.drivers("rebar-initial")[address]


def test_rebar_release_restores_the_size_and_the_driver(rebar):
    result = rebar.hook_json("rebar-release")
    assert [s["status"] for s in result["rollback"]] == ["undone"]
    assert int(rebar.facts["bar.released"]) == REBAR_DEFAULT_MIB
    assert rebar.facts["virtio.released"] == rebar.facts["virtio.initial"]
    assert rebar.snapshot("rebar-released") == rebar.snapshot("rebar-initial")
