"""`passthrough-hook check DOMAIN`: the preflight on the host shapes of tests/hosts.py."""

import json
import os
import time

import pytest
from runs import command
from tool_trees import REPO, host_tree, hostdev_xml, write_profile

DEMO = REPO / "config" / "demo-host"
CODE43_OK = "<hyperv mode='custom'><vendor_id state='on' value='0123456789ab'/></hyperv><kvm><hidden state='on'/></kvm>"
NVIDIA_CARD = ("0000:0a:00.0", "0000:0a:00.1", "0000:0a:00.2", "0000:0a:00.3")
NVIDIA_PROFILE = """\
devices: {gpu: "0000:0a:00.0", gpu-audio: "0000:0a:00.1", gpu-usb: "0000:0a:00.2", gpu-serial: "0000:0a:00.3"}
prepare/begin:
  - modprobe: [vfio, vfio_iommu_type1, vfio_pci]
  - detach: [gpu, gpu-audio, gpu-usb, gpu-serial]
"""


@pytest.fixture(autouse=True)
def no_libvirt_lookup(monkeypatch):
    """Never the real libvirt: without --xml, the domain XML is unavailable, as when libvirtd is down."""
    from passthrough.tools.libvirt_domain import DomainXmlError

    def unreachable(domain, uri, timeout):
        raise DomainXmlError(
            f"libvirt ({uri}): Failed to connect socket", "pass the XML with --xml FILE"
        )

    monkeypatch.setattr("passthrough.tools.libvirt_domain.from_libvirt", unreachable)


def check(tmp_path, root, profile: str, xml: str | None, *extra):
    profiles = tmp_path / "profiles"
    write_profile(profiles, "win10", profile)
    args = ["check", "--root", root, "--config-dir", profiles, "--json", *extra, "win10"]
    if xml is not None:
        (tmp_path / "win10.xml").write_text(xml)
        args[-1:-1] = ["--xml", tmp_path / "win10.xml"]
    code, out, err = command(*args)
    assert err == ""
    return code, json.loads(out)["findings"]


def of(findings, check_name, severity=None):
    return [
        f
        for f in findings
        if f["check"] == check_name and (severity is None or f["severity"] == severity)
    ]


def test_demo_host_with_the_bundled_profile_and_xml_passes():
    code, out, err = command(
        "check",
        "--root",
        DEMO,
        "--config-dir",
        REPO / "config",
        "--xml",
        REPO / "config" / "win10.xml",
        "win10",
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        f"Preflight of win10 (profile {REPO}/config/win10.yaml, host {DEMO}, "
        f"XML {REPO}/config/win10.xml):"
    )
    assert [
        line.split()[0]
        for line in lines[1:]
        if line.startswith("  ") and not line.startswith("   ")
    ] == ["ok", "ok", "ok", "ok", "ok", "info", "ok", "ok"]
    assert "  ok       IOMMU on (6 groups)" in lines
    assert "  ok       BAR 2 of gpu (0000:03:00.0) can be set to 8 MiB (now 256 MiB)" in lines
    assert lines[-1] == "No problems found (7 checks passed)."


def test_group_shared_with_a_host_usb_controller_is_an_error(tmp_path):
    profile = (
        'devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}\n'
        "prepare/begin:\n  - detach: [gpu, gpu-audio]\n"
    )
    code, findings = check(
        tmp_path,
        host_tree(tmp_path, "mixed"),
        profile,
        hostdev_xml("win10", "0000:03:00.0", "0000:03:00.1", features=CODE43_OK),
    )
    assert code == 1
    [group] = of(findings, "groups")
    assert group["severity"] == "error"
    assert group["message"] == (
        "IOMMU group 7 of gpu (0000:03:00.0), gpu-audio (0000:03:00.1) also holds 0000:02:00.0 (USB controller, "
        "xhci_hcd), which neither the profile nor libvirt (a managed <hostdev>) detaches: QEMU refuses the group "
        '("group 7 is not viable") while any of its devices has a host driver'
    )
    assert group["fix"].startswith(
        "0000:02:00.0: it belongs to the host, not to the card; put the card in a slot "
        "with its own IOMMU group"
    )
    # and the RX 580 is a Polaris card, whose only reset (bus) does not reset it
    assert [
        (f["severity"], f["check"]) for f in findings if f["severity"] in ("error", "warning")
    ] == [("error", "groups"), ("warning", "reset")]


def test_missing_functions_of_a_four_function_card_are_named_with_what_to_add(tmp_path):
    profile = (
        'devices: {gpu: "0000:0a:00.0", gpu-audio: "0000:0a:00.1"}\n'
        "prepare/begin:\n  - detach: [gpu, gpu-audio]\n"
    )
    code, findings = check(
        tmp_path,
        host_tree(tmp_path, "nvidia4"),
        profile,
        hostdev_xml("win10", "0000:0a:00.0", "0000:0a:00.1", features=CODE43_OK),
    )
    assert code == 1
    [group] = of(findings, "groups", "error")
    assert (
        "also holds 0000:0a:00.2 (USB controller, xhci_hcd), 0000:0a:00.3 (Serial bus controller, nvidia-gpu)"
        in group["message"]
    )
    assert group["fix"] == (
        f'add them under devices: (gpu-usb: "0000:0a:00.2", gpu-serial: "0000:0a:00.3") and to '
        f"the detach step in {tmp_path}/profiles/win10.yaml, or give them to the VM as managed "
        f"<hostdev>s"
    )


def test_complete_four_function_profile_passes_and_vfio_built_in_counts(tmp_path):
    code, findings = check(
        tmp_path,
        host_tree(tmp_path, "nvidia4"),
        NVIDIA_PROFILE,
        hostdev_xml("win10", *NVIDIA_CARD, features=CODE43_OK),
    )
    assert code == 0
    assert [f["severity"] for f in findings if f["severity"] != "ok"] == [
        "info"
    ]  # the tree has no hook
    [modules] = of(findings, "modules")
    assert modules["message"] == (
        "vfio modules available for kernel 6.5.0-14-generic: vfio (built in), "
        "vfio_iommu_type1 (built in), vfio_pci (built in)"
    )
    assert of(findings, "xml")[-1]["message"] == (
        "Code 43 traps avoided: the hypervisor vendor id is set and KVM is hidden"
    )


def test_nvidia_gpu_without_vendor_id_or_hidden_kvm_gets_both_code_43_warnings(tmp_path):
    code, findings = check(
        tmp_path,
        host_tree(tmp_path, "nvidia4"),
        NVIDIA_PROFILE,
        hostdev_xml("win10", *NVIDIA_CARD, features="<acpi/>"),
    )
    assert code == 0  # warnings only
    vendor, hidden = of(findings, "xml", "warning")
    assert (
        "gpu (0000:0a:00.0) is an NVIDIA GPU and the domain has no <hyperv><vendor_id state='on'/>"
        in vendor["message"]
    )
    assert (
        vendor["example"]
        == "<hyperv mode='custom'><vendor_id state='on' value='0123456789ab'/></hyperv>"
    )
    assert (
        "does not hide KVM" in hidden["message"]
        and hidden["example"] == "<kvm><hidden state='on'/></kvm>"
    )


def test_amd_gpu_needs_only_the_vendor_id(tmp_path):
    profile = (REPO / "config" / "win10.yaml").read_text()
    code, findings = check(
        tmp_path, DEMO, profile, hostdev_xml("win10", "0000:03:00.0", "0000:03:00.1")
    )
    assert code == 0
    [warning] = of(findings, "xml", "warning")
    assert warning["message"].startswith(
        "gpu (0000:03:00.0) is an AMD GPU and the domain has no <hyperv>"
    )


def test_hostdevs_and_profile_devices_that_do_not_match(tmp_path):
    root = host_tree(tmp_path, "demo")
    xml = hostdev_xml("win10", "0000:03:00.0", "0000:02:00.0", managed="no", features=CODE43_OK)
    code, findings = check(tmp_path, root, (REPO / "config" / "win10.yaml").read_text(), xml)
    assert code == 1
    nic, audio = of(findings, "xml")[:2]
    assert nic["severity"] == "error"
    assert nic["message"] == (
        "the domain passes 0000:02:00.0 (Ethernet controller, igc) with managed='no' and the "
        "profile does not detach it: QEMU cannot open it while it is on igc"
    )
    assert audio["severity"] == "warning"
    assert audio["message"] == (
        "the profile detaches gpu-audio (0000:03:00.1) but the domain has no <hostdev> for "
        "it: the VM will not see it"
    )
    assert audio["example"] == (
        "<hostdev mode='subsystem' type='pci' managed='yes'><source><address "
        "domain='0x0000' bus='0x03' slot='0x00' function='0x1'/></source></hostdev>"
    )


def test_managed_hostdevs_outside_the_profile_are_fine(tmp_path):
    root = host_tree(tmp_path, "demo")
    nic = root / "sys/bus/pci/devices/0000:02:00.0"
    os.unlink(nic / "driver")
    (root / "sys/bus/pci/drivers/vfio-pci").mkdir()
    os.symlink(
        "../../../bus/pci/drivers/vfio-pci", nic / "driver"
    )  # as vfio-pci.ids= at boot leaves it
    xml = hostdev_xml(
        "win10", "0000:03:00.0", "0000:03:00.1", "0000:01:00.0", "0000:02:00.0", features=CODE43_OK
    )
    code, findings = check(tmp_path, root, (REPO / "config" / "win10.yaml").read_text(), xml)
    assert code == 0
    nvme, vfio = of(findings, "xml")[:2]
    assert nvme["severity"] == "info" and nvme["message"] == (
        "the domain passes 0000:01:00.0 (Non-Volatile memory controller, nvme), which the profile does not name: "
        "libvirt detaches it itself (managed='yes'), after the profile's prepare/begin steps"
    )
    assert vfio["severity"] == "info" and vfio["message"].endswith("it is on vfio-pci already")


def test_a_group_mate_libvirt_detaches_itself_completes_the_group(tmp_path):
    profile = 'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n'
    _, findings = check(
        tmp_path, DEMO, profile, hostdev_xml("win10", "0000:03:00.0", "0000:03:00.1")
    )
    assert of(findings, "groups") == [
        {
            "severity": "ok",
            "check": "groups",
            "fix": "",
            "example": "",
            "message": "IOMMU group 14 of gpu (0000:03:00.0) holds nothing else that "
            "a host driver keeps",
        }
    ]
    for managed in (
        "no",
        None,
    ):  # unmanaged, or not in the XML at all: nothing detaches the audio function
        xml = (
            hostdev_xml("win10", "0000:03:00.0", "0000:03:00.1", managed="no") if managed else None
        )
        code, findings = check(tmp_path, DEMO, profile, xml)
        assert code == 1 and of(findings, "groups", "error"), findings


@pytest.mark.parametrize("driver", [None, "pci-stub"])
def test_a_group_mate_without_a_host_driver_is_fine(tmp_path, driver):
    root = host_tree(tmp_path, "demo")
    audio = root / "sys/bus/pci/devices/0000:03:00.1"
    os.unlink(audio / "driver")
    if driver:
        (root / "sys/bus/pci/drivers" / driver).mkdir()
        os.symlink(f"../../../bus/pci/drivers/{driver}", audio / "driver")
    _, findings = check(
        tmp_path, root, 'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n', None
    )
    assert [f["severity"] for f in of(findings, "groups")] == ["ok"]


def test_unknown_address_is_an_error_naming_the_device(tmp_path):
    profile = 'devices: {gpu: "0000:03:00.0", nic: "0000:0b:00.0"}\nprepare/begin:\n  - detach: [gpu, nic]\n'
    code, findings = check(tmp_path, DEMO, profile, None)
    assert code == 1
    [devices] = of(findings, "devices")
    assert devices["message"] == "nic (0000:0b:00.0) is not a PCI device of this host"
    assert "`passthrough-hook iommu` lists this host's devices" in devices["fix"]


def test_without_xml_the_xml_checks_are_skipped_with_how_to_give_it(tmp_path):
    code, findings = check(tmp_path, DEMO, (REPO / "config" / "win10.yaml").read_text(), None)
    assert code == 0
    [xml] = of(findings, "xml")
    assert xml == {
        "severity": "warning",
        "check": "xml",
        "example": "",
        "fix": "pass the XML with --xml FILE",
        "message": "domain XML checks skipped: libvirt (qemu:///system): Failed to connect socket",
    }


def test_iommu_off_is_an_error_with_the_kernel_parameter(tmp_path):
    root = host_tree(tmp_path, "mixed", iommu=False, cmdline="ro quiet")
    profile = 'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n'
    code, findings = check(tmp_path, root, profile, None)
    assert code == 1
    [iommu] = of(findings, "iommu")
    assert (
        iommu["severity"] == "error"
        and "turn the Intel IOMMU on with the kernel parameter intel_iommu=on" in iommu["fix"]
    )
    assert not of(findings, "groups")


@pytest.mark.parametrize(
    "change,severity,message",
    [
        ("no-modules-dir", "error", "kernel 6.1.0-13-amd64 runs but has no modules directory"),
        ("no-vfio-pci", "error", "vfio_pci: not available for kernel 6.1.0-13-amd64"),
        ("no-osrelease", "info", "cannot tell whether vfio, vfio_iommu_type1, vfio_pci exist"),
    ],
)
def test_vfio_modules_for_the_running_kernel(tmp_path, change, severity, message):
    import shutil

    root = host_tree(tmp_path, "demo")
    if change == "no-modules-dir":
        shutil.rmtree(root / "lib/modules/6.1.0-13-amd64")
    elif change == "no-vfio-pci":
        (root / "lib/modules/6.1.0-13-amd64/kernel/drivers/vfio/pci/vfio-pci.ko").unlink()
    else:
        (root / "proc/sys/kernel/osrelease").unlink()
    code, findings = check(tmp_path, root, (REPO / "config" / "win10.yaml").read_text(), None)
    [modules] = of(findings, "modules")
    assert modules["severity"] == severity and modules["message"].startswith(message), modules
    assert code == (1 if severity == "error" else 0)


def test_bar_sizes_are_checked_against_the_device(tmp_path):
    profile = (
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - resize_bar: {device: gpu, bar: 0, size: 8MiB}\n'
        "  - resize_bar: {device: gpu, bar: 4, size: 8MiB}\n"
    )
    code, findings = check(tmp_path, DEMO, profile, None)
    assert code == 1
    unsupported, missing = of(findings, "bars")
    assert unsupported["message"].endswith(
        "BAR 0 of gpu (0000:03:00.0) does not support 8 MiB; it supports "
        "256 MiB, 512 MiB, 1 GiB, 2 GiB, 4 GiB, 8 GiB, 16 GiB"
    )
    assert unsupported["message"].startswith("prepare/begin step 1 (")
    assert missing["message"].endswith(
        "BAR 4 of gpu (0000:03:00.0) has no Resizable BAR capability (no resource4_resize)"
    )


# --- the hook and the daemon ---------------------------------------------------------------------


def install_hook(
    root, name="qemu", executable=True, text="# installed by passthrough-hook install.sh\n"
):
    path = root / "etc/libvirt/hooks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/python3 -I\n" + text)
    path.chmod(0o755 if executable else 0o644)
    return path


def run_daemon(root, name="libvirtd", pid=812, started_ago=500.0):
    """A libvirt daemon in the tree's /proc that started `started_ago` seconds ago."""
    boot = int(time.time()) - 10_000
    ticks = int((10_000 - started_ago) * os.sysconf("SC_CLK_TCK"))
    (root / "proc" / str(pid)).mkdir(parents=True)
    (root / "proc" / str(pid) / "comm").write_text(name + "\n")
    (root / "proc" / str(pid) / "stat").write_text(
        f"{pid} ({name}) S " + "0 " * 18 + f"{ticks} 0 0\n"
    )
    (root / "proc/stat").write_text(f"cpu 1 2 3\nbtime {boot}\n")
    (root / "run").mkdir(exist_ok=True)
    (root / "run" / f"{name}.pid").write_text(f"{pid}\n")


def hook_findings(tmp_path, root):
    _, findings = check(tmp_path, root, (REPO / "config" / "win10.yaml").read_text(), None)
    return [(f["severity"], f["message"]) for f in of(findings, "hook")]


def test_hook_installed_before_the_daemon_started(tmp_path):
    root = host_tree(tmp_path, "demo")
    hook = install_hook(root)
    os.utime(hook, (time.time() - 900, time.time() - 900))
    run_daemon(root, started_ago=500)
    (ok, noticed) = hook_findings(tmp_path, root)
    assert ok == ("ok", f"hook installed: {hook}")
    assert noticed[0] == "ok" and noticed[1].startswith("libvirtd (pid 812) started at ")


def test_hook_newer_than_the_daemon_is_a_warning_to_reload(tmp_path):
    root = host_tree(tmp_path, "demo")
    install_hook(root, "qemu", text="# someone else's hook\n")
    ours = install_hook(root, "qemu.d/passthrough-hook")
    run_daemon(root, name="virtqemud", pid=77, started_ago=500)
    _, (severity, message) = hook_findings(tmp_path, root)
    assert severity == "warning"
    assert (
        message.startswith("virtqemud (pid 77) started at ")
        and f"before {ours} was written" in message
    )


@pytest.mark.parametrize(
    "setup,expected",
    [
        ("none", ("error", "the hook is not installed")),
        ("not-executable", ("error", "is not executable, so libvirt skips it")),
        ("no-daemon", ("info", "cannot tell whether libvirt noticed the hook")),
    ],
)
def test_hook_problems(tmp_path, setup, expected):
    root = host_tree(tmp_path, "demo")
    (root / "etc/libvirt/hooks").mkdir(parents=True)
    if setup != "none":
        install_hook(root, executable=setup != "not-executable")
    findings = hook_findings(tmp_path, root)
    assert any(f[0] == expected[0] and expected[1] in f[1] for f in findings), findings


def test_profile_errors_and_missing_profiles_exit_2(tmp_path):
    profiles = tmp_path / "profiles"
    write_profile(
        profiles, "win10", 'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detatch: [gpu]\n'
    )
    code, _, err = command("check", "--root", DEMO, "--config-dir", profiles, "win10")
    assert code == 2 and err.startswith(f'{profiles}/win10.yaml:3:5: unknown action "detatch"')
    code, _, err = command("check", "--root", DEMO, "--config-dir", profiles, "other")
    assert code == 2
    assert err == (
        f"passthrough-hook: other has no profile in {profiles} (no other.yaml); write a first one with "
        f"`passthrough-hook init other`\n"
    )


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the hook's ownership rule applies to root, as the hook runs"
)
def test_a_profile_others_can_write_is_an_error(tmp_path):
    profiles = tmp_path / "profiles"
    path = write_profile(profiles, "win10", (REPO / "config" / "win10.yaml").read_text())
    path.chmod(0o666)
    code, out, _ = command("check", "--root", DEMO, "--config-dir", profiles, "--json", "win10")
    [finding] = of(json.loads(out)["findings"], "profile")
    assert code == 1 and finding["severity"] == "error"
    assert finding["message"] == (
        f"the hook will refuse this profile: {path} is writable by group or others (mode "
        f"666); anyone who can write it runs code as root (chmod go-w {path})"
    )
