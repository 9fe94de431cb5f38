"""`check` on hosts under SELinux or AppArmor: the hook's boolean and profile, and whether
QEMU may read each <rom file=...> of the domain (issue 11: a ROM libvirt's security driver
keeps from QEMU stops the VM)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hosts import apparmor_files, selinux_files
from runs import command
from tool_trees import host_tree, write_profile

PROFILE = """\
devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: [gpu, gpu-audio]
"""
MARKER = "#!/usr/bin/python3 -I\n# installed by passthrough-hook install.sh\n"
UUID = "0b0b0b0b-1111-2222-3333-444455556666"


def domain_xml(rom: str | None = None) -> str:
    rom_element = f"<rom file='{rom}'/>" if rom else ""
    hostdevs = "".join(
        f"<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' "
        f"bus='0x03' slot='0x00' function='0x{f}'/></source>{rom_element if f == 0 else ''}</hostdev>"
        for f in (0, 1)
    )
    return (
        f"<domain type='kvm'><name>win10</name><uuid>{UUID}</uuid><features><hyperv>"
        f"<vendor_id state='on' value='0123456789ab'/></hyperv></features>"
        f"<devices>{hostdevs}</devices></domain>"
    )


def tree(tmp_path: Path, files: dict[str, str], hook: str | None = "qemu") -> Path:
    root = host_tree(tmp_path, "demo", files=files)
    if hook:
        path = root / "etc/libvirt/hooks" / hook
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(MARKER)
        path.chmod(0o755)
    return root


def check(tmp_path: Path, root: Path, rom: str | None = None) -> tuple[int, list[dict]]:
    profiles = write_profile(tmp_path / "profiles", "win10", PROFILE).parent
    (tmp_path / "win10.xml").write_text(domain_xml(rom))
    code, out, err = command(
        "check",
        "--root",
        root,
        "--config-dir",
        profiles,
        "--xml",
        tmp_path / "win10.xml",
        "--json",
        "win10",
    )
    assert err == ""
    return code, json.loads(out)["findings"]


def security(findings: list[dict]) -> list[tuple[str, str, str]]:
    return [(f["severity"], f["message"], f["fix"]) for f in findings if f["check"] == "security"]


def roms(findings: list[dict]) -> list[dict]:
    return [f for f in findings if f["check"] == "xml" and "<rom>" in f["message"]]


# --- SELinux: the boolean --------------------------------------------------------------------


def test_selinux_boolean_off_is_an_error_with_the_command_to_turn_it_on(tmp_path):
    code, findings = check(tmp_path, tree(tmp_path, selinux_files(hooks_unconfined=False)))
    assert code == 1
    assert security(findings) == [
        (
            "error",
            "SELinux is enforcing and virt_hooks_unconfined is off: libvirt runs hooks confined "
            "(virtqemud_t may read sysfs but not write it, and may not run modprobe), so the "
            "profile's detach and modprobe steps are denied",
            "setsebool -P virt_hooks_unconfined on",
        )
    ]


def test_selinux_boolean_on_passes(tmp_path):
    code, findings = check(tmp_path, tree(tmp_path, selinux_files(hooks_unconfined=True)))
    assert security(findings) == [
        ("ok", "SELinux: virt_hooks_unconfined is on, so libvirt runs the hook unconfined", "")
    ]


def test_selinux_permissive_with_the_boolean_off_warns(tmp_path):
    code, findings = check(
        tmp_path, tree(tmp_path, selinux_files(enforcing=False, hooks_unconfined=False))
    )
    [(severity, message, fix)] = security(findings)
    assert severity == "warning" and message.startswith("SELinux is permissive and")
    assert message.endswith(
        "permissive mode only logs the denials, enforcing mode will stop the hook"
    )
    assert fix == "setsebool -P virt_hooks_unconfined on"


def test_selinux_policy_without_the_boolean_is_reported_as_such(tmp_path):
    code, findings = check(tmp_path, tree(tmp_path, selinux_files(hooks_unconfined=None)))
    [(severity, message, _)] = security(findings)
    assert severity == "info"
    assert "its policy has no virt_hooks_unconfined boolean (older than the 2024 policy)" in message


def test_no_security_module_no_finding(tmp_path):
    code, findings = check(tmp_path, tree(tmp_path, {}))
    assert security(findings) == [] and code == 0


# --- AppArmor: the daemon's profile and the hook ----------------------------------------------


@pytest.mark.parametrize("hook", ["qemu", "qemu.d/passthrough-hook"])
def test_apparmor_libvirtd_profile_runs_the_hook_so_no_override_is_needed(tmp_path, hook):
    code, findings = check(tmp_path, tree(tmp_path, apparmor_files(), hook=hook))
    assert code == 0
    assert security(findings) == [
        (
            "ok",
            "AppArmor: /etc/apparmor.d/usr.sbin.libvirtd runs the hook inside its profile and "
            "allows what it does (the hook: /etc/libvirt/hooks/** rmix; sysfs writes: /** rwmkl; "
            "modprobe: /usr/sbin/* PUx): no local override is needed",
            "",
        )
    ]


def test_apparmor_profile_without_the_hooks_rule_is_an_error_with_the_lines_to_add(tmp_path):
    files = apparmor_files()
    profile = files["etc/apparmor.d/usr.sbin.libvirtd"]
    files["etc/apparmor.d/usr.sbin.libvirtd"] = profile.replace(
        "  /etc/libvirt/hooks/** rmix,\n", ""
    )
    code, findings = check(tmp_path, tree(tmp_path, files))
    assert code == 1
    assert security(findings) == [
        (
            "error",
            "AppArmor: /etc/apparmor.d/usr.sbin.libvirtd does not allow the hook "
            "(/etc/libvirt/hooks/qemu): libvirt's daemon runs the hook under that profile",
            "add `/etc/libvirt/hooks/qemu rmix,` to /etc/apparmor.d/local/usr.sbin.libvirtd, then "
            "`apparmor_parser -r /etc/apparmor.d/usr.sbin.libvirtd`",
        )
    ]


def test_apparmor_deny_rule_in_the_local_override_is_named(tmp_path):
    files = apparmor_files()
    files["etc/apparmor.d/local/usr.sbin.libvirtd"] = "  deny /sys/bus/pci/** w,\n"
    code, findings = check(tmp_path, tree(tmp_path, files))
    [(severity, message, _)] = security(findings)
    assert severity == "error"
    assert (
        "does not allow sysfs writes (/sys/bus/pci/drivers_probe: denied by "
        "/etc/apparmor.d/local/usr.sbin.libvirtd:1)" in message
    )


# --- ROM files ---------------------------------------------------------------------------------


def put_rom(root: Path, rom: str, mode: int = 0o644) -> None:
    path = root / rom.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x55\xaa" + bytes(510))
    path.chmod(mode)


def test_apparmor_rom_under_home_is_an_error_with_the_copy_and_the_rule(tmp_path):
    root = tree(tmp_path, apparmor_files())
    put_rom(root, "/home/user/vbios/rx6750.rom")
    code, findings = check(tmp_path, root, "/home/user/vbios/rx6750.rom")
    assert code == 1
    [rom] = roms(findings)
    assert rom["severity"] == "error"
    assert rom["message"] == (
        "the <rom> of gpu (0000:03:00.0), /home/user/vbios/rx6750.rom, is outside what AppArmor "
        "lets QEMU read: libvirt's virt-aa-helper adds no rule for ROM files to the domain's "
        "profile, and /etc/apparmor.d/libvirt/TEMPLATE.qemu, /etc/apparmor.d/abstractions/libvirt-qemu "
        "allow none for this path"
    )
    assert rom["fix"] == (
        "copy it to /usr/share/vgabios (`sudo install -D -m 644 /home/user/vbios/rx6750.rom "
        "/usr/share/vgabios/rx6750.rom`) and point the XML there (`virsh edit`: "
        "<rom file='/usr/share/vgabios/rx6750.rom'/>); or allow the file: add "
        '`"/home/user/vbios/rx6750.rom" r,` to /etc/apparmor.d/local/abstractions/libvirt-qemu '
        "(read at the next VM start)"
    )


@pytest.mark.parametrize("rom", ["/usr/share/vgabios/rx6750.rom", "/home/user/vbios/rx6750.rom"])
def test_apparmor_rom_where_the_profile_allows_it_passes(tmp_path, rom):
    local = '  "/home/user/vbios/rx6750.rom" r,'  # the local rule the fix above suggests
    root = tree(tmp_path, apparmor_files(local_qemu=local))
    put_rom(root, rom)
    code, findings = check(tmp_path, root, rom)
    assert [(f["severity"], f["message"]) for f in roms(findings)] == [
        ("ok", f"the <rom> of gpu (0000:03:00.0), {rom}, is there and QEMU may read it")
    ]
    assert code == 0


def test_apparmor_per_domain_profile_is_read_when_libvirt_made_one(tmp_path):
    files = apparmor_files()
    files[f"etc/apparmor.d/libvirt/libvirt-{UUID}"] = (
        "profile libvirt-x {\n  #include <abstractions/libvirt-qemu>\n"
        f"  #include <libvirt/libvirt-{UUID}.files>\n}}\n"
    )
    files[f"etc/apparmor.d/libvirt/libvirt-{UUID}.files"] = '  "/opt/roms/**" r,\n'
    root = tree(tmp_path, files)
    put_rom(root, "/opt/roms/card.rom")
    code, findings = check(tmp_path, root, "/opt/roms/card.rom")
    assert [f["severity"] for f in roms(findings)] == ["ok"]


def test_security_driver_none_turns_the_apparmor_rom_check_off(tmp_path):
    files = apparmor_files()
    files["etc/libvirt/qemu.conf"] = 'security_driver = "none"\n'
    root = tree(tmp_path, files)
    put_rom(root, "/home/user/card.rom")
    code, findings = check(tmp_path, root, "/home/user/card.rom")
    assert [f["severity"] for f in roms(findings)] == ["ok"]


def test_rom_missing_from_a_tree_cannot_be_told_but_its_path_still_is(tmp_path):
    code, findings = check(tmp_path, tree(tmp_path, apparmor_files()), "/home/user/card.rom")
    assert [(f["severity"], f["message"].split(": ")[0]) for f in roms(findings)] == [
        (
            "info",
            "cannot tell whether the <rom> of gpu (0000:03:00.0), /home/user/card.rom, exists",
        ),
        (
            "error",
            "the <rom> of gpu (0000:03:00.0), /home/user/card.rom, is outside what AppArmor lets QEMU read",
        ),
    ]


def test_rom_others_cannot_read_is_a_warning(tmp_path):
    root = tree(tmp_path, {})
    put_rom(root, "/usr/share/vgabios/card.rom", mode=0o600)
    code, findings = check(tmp_path, root, "/usr/share/vgabios/card.rom")
    [rom] = roms(findings)
    assert rom["severity"] == "warning"
    assert rom["message"] == (
        "the <rom> of gpu (0000:03:00.0), /usr/share/vgabios/card.rom, is mode 600 (not readable "
        "by others): QEMU, which runs as an unprivileged user, may not be able to read it"
    )
    assert rom["fix"].startswith("`chmod 644 /usr/share/vgabios/card.rom` and let others search")


def test_rom_path_that_is_not_absolute_is_an_error(tmp_path):
    code, findings = check(tmp_path, tree(tmp_path, {}), "vbios.rom")
    [rom] = roms(findings)
    assert rom["severity"] == "error" and "not an absolute path" in rom["message"]


@pytest.mark.parametrize(
    "rom, label",
    [
        ("/var/lib/libvirt/vbios/card.rom", "virt_var_lib_t"),
        ("/home/user/card.rom", "user_home_t"),
    ],
)
def test_selinux_rom_with_a_label_qemu_cannot_read_is_an_error(tmp_path, rom, label):
    root = tree(tmp_path, selinux_files(hooks_unconfined=True))
    put_rom(root, rom)
    code, findings = check(tmp_path, root, rom)
    assert code == 1
    [found] = roms(findings)
    assert found["message"] == (
        f"the <rom> of gpu (0000:03:00.0), {rom}, gets {label} by default, which SELinux does "
        f"not let QEMU (svirt_t) read"
    )
    directory = rom.rsplit("/", 1)[0]
    assert found["fix"].endswith(
        f"or label its directory: `semanage fcontext -a -t virt_content_t '{directory}(/.*)?' "
        f"&& restorecon -Rv {directory}`"
    )


@pytest.mark.parametrize(
    "rom",
    [
        "/usr/share/vgabios/card.rom",
        "/var/lib/libvirt/boot/card.rom",
        "/var/lib/libvirt/images/card.rom",
    ],
)
def test_selinux_rom_where_qemu_reads_passes(tmp_path, rom):
    root = tree(tmp_path, selinux_files(hooks_unconfined=True))
    put_rom(root, rom)
    code, findings = check(tmp_path, root, rom)
    assert [f["severity"] for f in roms(findings)] == ["ok"] and code == 0


def test_selinux_rom_elsewhere_is_not_guessed(tmp_path):
    root = tree(tmp_path, selinux_files(hooks_unconfined=True))
    put_rom(root, "/opt/roms/card.rom")
    code, findings = check(tmp_path, root, "/opt/roms/card.rom")
    [found] = roms(findings)
    assert found["severity"] == "info" and found["message"].startswith(
        "cannot tell the SELinux label of the <rom> of gpu (0000:03:00.0), /opt/roms/card.rom"
    )


# --- The real profiles: Debian 12's libvirt 9.0 (tools/test installs libvirt-daemon-system) --

REAL = Path("/etc/apparmor.d")
REAL_FILES = (
    "usr.sbin.libvirtd",
    "local/usr.sbin.libvirtd",
    "abstractions/libvirt-qemu",
    "local/abstractions/libvirt-qemu",
    "libvirt/TEMPLATE.qemu",
    "abstractions/base",
    "tunables/global",
)


def test_the_verdicts_hold_on_the_real_debian_profiles(tmp_path):
    assert (REAL / "usr.sbin.libvirtd").is_file(), "install libvirt-daemon-system (tools/test does)"
    root = tree(tmp_path, {"sys/module/apparmor/parameters/enabled": "Y"})
    for rel in REAL_FILES:
        if (REAL / rel).exists():
            target = root / "etc/apparmor.d" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REAL / rel, target)
    put_rom(root, "/home/user/card.rom")
    put_rom(root, "/usr/share/vgabios/card.rom")
    code, findings = check(tmp_path, root, "/home/user/card.rom")
    [(severity, message, _)] = security(findings)
    assert severity == "ok" and "/etc/libvirt/hooks/** rmix" in message and "/** rwmkl" in message
    assert [f["severity"] for f in roms(findings)] == ["error"]
    code, findings = check(tmp_path, root, "/usr/share/vgabios/card.rom")
    assert [f["severity"] for f in roms(findings)] == ["ok"]


def test_a_missing_rom_on_the_host_itself_is_an_error(tmp_path):
    """On / (is_live) a missing file is no gap of a snapshot: QEMU will not find it either."""
    from passthrough.tools.libvirt_domain import parse
    from passthrough.tools.policy_checks import one_rom

    xml = parse(domain_xml("/home/user/card.rom"), "win10.xml")
    [found] = one_rom(tmp_path, True, xml, "the <rom> of gpu", "/home/user/card.rom")
    assert found.severity == "error"
    assert found.message == (
        "the <rom> of gpu, /home/user/card.rom, does not exist: QEMU stops the start with "
        "'failed to find romfile'"
    )


def test_a_hook_copied_without_relabelling_is_a_warning(tmp_path, monkeypatch):
    labels = {"etc/libvirt/hooks/qemu": "virt_etc_rw_t"}  # the label of its parent directory
    monkeypatch.setattr(
        "passthrough.tools.security.selinux_type",
        lambda path: next((v for k, v in labels.items() if str(path).endswith(k)), None),
    )
    code, findings = check(tmp_path, tree(tmp_path, selinux_files(hooks_unconfined=True)))
    assert security(findings)[1] == (
        "warning",
        "/etc/libvirt/hooks/qemu is labelled virt_etc_rw_t, not virt_hook_t: it was copied into "
        "place without relabelling, and virt_hooks_unconfined does not apply to it",
        "restorecon -R /etc/libvirt/hooks",
    )
