"""Kernels from 5.15 to 6.12: the tutorials' module lists (vfio_virqfd, vfio_iommu_type1)
start the VM on every one of them, the plan and `check` say which modules a kernel no
longer has, and `init` writes the one module every kernel needs.

Module facts come from the host tree (modules.builtin, modules.dep, /boot/config-*), so
these run the same whatever kernel this machine has."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakekernel import FakeKernel
from hosts import KERNELS, SEED_PROFILE, kernel_host
from hypothesis import given
from hypothesis import strategies as st
from runs import LOG, STATE, command, hook
from tool_trees import host_tree, hostdev_xml, write_profile

from passthrough.host.modules import canonical, lists_module, module_file_name, module_names

GPU, AUDIO = "0000:03:00.0", "0000:03:00.1"
# What many tutorials load, and the seed profile's list with vfio_virqfd added.
TUTORIAL_PROFILE = SEED_PROFILE.replace(
    "[vfio, vfio_iommu_type1, vfio_pci]", "[vfio, vfio_iommu_type1, vfio_virqfd, vfio_pci]"
)
XML = hostdev_xml(
    "win10", GPU, AUDIO, features="<hyperv><vendor_id state='on' value='0123456789ab'/></hyperv>"
)
# (kernel, modules the step has nothing to load for, why)
OBSOLETE = {
    "5.15": {},
    "6.1": {},
    "6.6-iommufd": {
        "vfio_virqfd": "merged into vfio since Linux 6.2 (kernel 6.6.30-iommufd); vfio provides it",
        "vfio_iommu_type1": "not built by kernel 6.6.30-iommufd (CONFIG_VFIO_CONTAINER=n: vfio "
        "uses iommufd)",
    },
    "6.12": {
        "vfio_virqfd": "merged into vfio since Linux 6.2 (kernel 6.12.9-amd64); vfio provides it",
    },
}


@pytest.mark.parametrize("version", list(KERNELS))
def test_the_tutorial_profile_starts_and_stops_on_every_kernel(fs, version):
    kernel = FakeKernel(fs, kernel_host(version))
    config = Path("/profiles")
    fs.create_file(str(config / "win10.yaml"), contents=TUTORIAL_PROFILE)
    start = kernel.snapshot()

    code, _, err = hook(kernel, "prepare", "begin")
    assert code == 0, err + Path(LOG).read_text()
    assert kernel.driver(GPU) == "vfio-pci" and kernel.driver(AUDIO) == "vfio-pci"
    absent = OBSOLETE[version]
    loaded = {"vfio", "vfio_iommu_type1", "vfio_virqfd", "vfio_pci"} - set(absent)
    assert loaded <= kernel.modules and not set(absent) & kernel.modules
    log = Path(LOG).read_text()
    for module, why in absent.items():
        assert f"modprobe {module} skipped: {why}; drop it from the step" in log

    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert kernel.snapshot() == start


def test_without_the_kernel_facts_modprobe_fails_the_start(fs):
    """The fake modprobe fails like the real one on 6.2+ ("Module vfio_virqfd not found"):
    the start fails and rolls back if the step tries to load what the kernel does not have."""
    kernel = FakeKernel(fs, kernel_host("6.12"))
    config = Path("/profiles")
    fs.create_file(str(config / "win10.yaml"), contents=TUTORIAL_PROFILE)
    Path("/host/boot/config-6.12.9-amd64").unlink()
    Path("/host/proc/sys/kernel/osrelease").write_text("6.1.0-13-amd64\n")  # wrong facts: pre-6.2
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin")
    assert code == 1
    assert (
        "modprobe: FATAL: Module vfio_virqfd not found in directory /lib/modules/6.12.9-amd64"
        in err
    )
    assert kernel.snapshot() == start


@pytest.mark.parametrize("version", ["6.6-iommufd", "6.12"])
def test_the_plan_notes_each_module_the_kernel_does_not_have(fs, version):
    kernel = FakeKernel(fs, kernel_host(version))
    config = Path("/profiles")
    fs.create_file(str(config / "win10.yaml"), contents=TUTORIAL_PROFILE)
    fs.create_dir(STATE)  # a dry run reads the journal; it creates nothing
    code, out, err = hook(kernel, "prepare", "begin", dry_run=True)
    assert code == 0, err
    for module, why in OBSOLETE[version].items():
        assert f"      modprobe {module}   [{module}: {why}; nothing to load]" in out
        assert f"  warning: modprobe {module} skipped: {why}; drop it from the step" in out
    assert "Plan: 3 step(s), no problems seen." in out


@pytest.mark.parametrize("version", ["6.6-iommufd", "6.12"])
def test_a_snapshot_of_a_newer_host_is_planned_for_its_kernel_on_any_machine(tmp_path, version):
    """Nothing of this machine's kernel is read: the snapshot's release, module names and
    build options decide."""
    code, _, err = command(
        "snapshot", "--root", host_tree(tmp_path, f"kernel-{version}"), tmp_path / "copy"
    )
    assert code == 0, err
    config = write_profile(tmp_path / "profiles", "win10", TUTORIAL_PROFILE).parent
    code, out, _ = command(
        "--root",
        tmp_path / "copy",
        "--config-dir",
        config,
        "--dry-run",
        "win10",
        "prepare",
        "begin",
    )
    assert code == 0
    for module, why in OBSOLETE[version].items():
        assert f"modprobe {module}   [{module}: {why}; nothing to load]" in out
    if "vfio_iommu_type1" not in OBSOLETE[version]:
        assert "modprobe vfio_iommu_type1   [vfio_iommu_type1: not loaded → loaded]" in out


@pytest.mark.parametrize("version", list(KERNELS))
def test_check_names_the_modules_to_drop(tmp_path, version):
    import json

    root = host_tree(tmp_path, f"kernel-{version}")
    config = write_profile(tmp_path / "profiles", "win10", TUTORIAL_PROFILE).parent
    (tmp_path / "win10.xml").write_text(XML)
    code, out, _ = command(
        "check",
        "--root",
        root,
        "--config-dir",
        config,
        "--xml",
        tmp_path / "win10.xml",
        "--json",
        "win10",
    )
    assert code == 0  # warnings only
    modules = [f for f in json.loads(out)["findings"] if f["check"] == "modules"]
    warned = {
        f["message"].split("modprobe ", 1)[1].split(" ", 1)[0]: f
        for f in modules
        if f["severity"] == "warning"
    }
    assert set(warned) == set(OBSOLETE[version])
    for module, why in OBSOLETE[version].items():
        assert warned[module]["message"] == (
            f"{config}/win10.yaml:3:5: modprobe {module} has nothing to load: {why}; the step skips it"
        )
        assert warned[module]["fix"].startswith(
            f"drop {module} from the modprobe step at {config}/win10.yaml:3:5"
        )
    [available] = [f for f in modules if f["severity"] == "ok"]
    kept = [
        m
        for m in ("vfio", "vfio_iommu_type1", "vfio_virqfd", "vfio_pci")
        if m not in OBSOLETE[version]
    ]
    assert available["message"].startswith(
        f"vfio modules available for kernel {KERNELS[version]['kernel']}: "
        + ", ".join(f"{m} (" for m in kept[:1])
    )
    for m in kept:
        assert f"{m} (" in available["message"]


@pytest.mark.parametrize("version", list(KERNELS))
def test_init_writes_vfio_pci_alone_and_its_profile_starts(tmp_path, version):
    root = host_tree(tmp_path, f"kernel-{version}")
    (tmp_path / "win10.xml").write_text(XML)
    code, out, _ = command(
        "init",
        "--root",
        root,
        "--config-dir",
        tmp_path / "profiles",
        "--xml",
        tmp_path / "win10.xml",
        "win10",
    )
    assert code == 0, out
    assert "  - modprobe: [vfio_pci]\n" in out
    assert "warning" not in out
    code, out, _ = command(
        "--root",
        root,
        "--config-dir",
        tmp_path / "profiles",
        "--dry-run",
        "win10",
        "prepare",
        "begin",
    )
    assert code == 0 and "no problems seen" in out, out


# What the kernel's files look like: paths of module files, compressed or not, with or
# without the dependencies after the colon; and the lines that name no module.
_PART = st.sampled_from(
    ["kernel", "drivers", "vfio", "pci", "vfio-pci", "vfio_iommu_type1", "snd-hda-intel", "x.ko"]
)
_FILE = st.builds(
    lambda dirs, name, ext: "/".join([*dirs, name + ext]),
    st.lists(_PART, max_size=3),
    _PART,
    st.sampled_from(["", ".ko", ".ko.xz", ".ko.zst", ".o", ".kox"]),
)
_LINE = st.builds(
    lambda file, deps, lead, trail: f"{lead}{file}{deps}{trail}",
    _FILE,
    st.sampled_from(["", ":", ": kernel/drivers/vfio/vfio.ko.xz", ":kernel/a.ko b.ko"]),
    st.sampled_from(["", " ", "\t"]),
    st.sampled_from(["", " "]),
)


@given(st.lists(_LINE, max_size=8))
def test_module_names_reads_each_line_as_module_file_name_does(lines):
    """One scan of the whole modules.dep (the hook reads it on every start) finds what
    module_file_name finds line by line."""
    text = "\n".join(lines)
    by_line = {module_file_name(line.split(":", 1)[0]) for line in lines} - {""}
    assert module_names(text) == by_line


@given(st.lists(_LINE, max_size=8), _PART)
def test_the_search_for_one_module_agrees_with_the_whole_scan(lines, part):
    """The hook asks has_file of each module it loads; it searches for the file name."""
    text = canonical("\n".join(lines))
    name = canonical(part.removesuffix(".ko"))
    assert lists_module(text, name) == (name in module_names(text))
