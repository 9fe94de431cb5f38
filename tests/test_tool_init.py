"""`passthrough-hook init DOMAIN`: a first profile from the domain's <hostdev>s."""

import sys
import threading
import types

import pytest
from runs import command
from tool_trees import REPO, host_tree, hostdev_xml

from passthrough.profile import load_profile
from passthrough.tools.facts import PciFunction
from passthrough.tools.libvirt_domain import LOOKUP_TIMEOUT, DomainXmlError, from_libvirt
from passthrough.tools.naming import suggest_names

DEMO = REPO / "config" / "demo-host"
SCHEMA = REPO / "passthrough" / "profile.schema.json"


def init(tmp_path, root, xml: str, *extra, domain="win10"):
    (tmp_path / "domain.xml").write_text(xml)
    return command(
        "init",
        "--root",
        root,
        "--config-dir",
        tmp_path / "profiles",
        "--xml",
        tmp_path / "domain.xml",
        *extra,
        domain,
    )


def test_demo_host_profile_from_the_bundled_xml(tmp_path):
    code, out, err = command(
        "init",
        "--root",
        DEMO,
        "--config-dir",
        tmp_path,
        "--xml",
        REPO / "config/win10.xml",
        "win10",
    )
    assert (code, err) == (0, "")
    text = (tmp_path / "win10.yaml").read_text()
    # The schema next to the profile, named relatively: no path of this machine in the file.
    assert text.splitlines()[0] == "# yaml-language-server: $schema=profile.schema.json"
    assert (tmp_path / "profile.schema.json").read_bytes() == SCHEMA.read_bytes()
    assert str(REPO) not in text
    assert (
        '  gpu: "0000:03:00.0"        # VGA compatible controller 1002:73df, amdgpu; in the XML\n'
        in text
    )
    assert (
        '  gpu-audio: "0000:03:00.1"  # Audio device 1002:ab28, snd_hda_intel; in the XML\n' in text
    )
    assert "  - modprobe: [vfio_pci]\n  - detach: [gpu, gpu-audio]\n" in text
    assert "  # - resize_bar: {device: gpu, bar: 2, size: 8MiB}" in text  # AMD card with ReBAR on
    profile = load_profile(tmp_path / "win10.yaml")
    assert profile.devices == {"gpu": "0000:03:00.0", "gpu-audio": "0000:03:00.1"}
    assert out.startswith(f"Wrote {tmp_path}/win10.yaml:\n\n{text}")
    assert f"Preflight of win10 (profile {tmp_path}/win10.yaml" in out
    assert out.endswith("No problems found (6 checks passed).\n")


def test_four_function_card_gets_its_usb_and_serial_functions(tmp_path):
    root = host_tree(tmp_path, "nvidia4")
    code, out, _ = init(
        tmp_path, root, hostdev_xml("gaming", "0000:0a:00.0", "0000:0a:00.1"), domain="gaming"
    )
    profile = load_profile(tmp_path / "profiles/gaming.yaml")
    assert profile.devices == {
        "gpu": "0000:0a:00.0",
        "gpu-audio": "0000:0a:00.1",
        "gpu-usb": "0000:0a:00.2",
        "gpu-serial": "0000:0a:00.3",
    }
    assert [getattr(s.action.params, "devices", None) for s in profile.events["prepare/begin"]] == [
        None,
        ["0000:0a:00.0", "0000:0a:00.1", "0000:0a:00.2", "0000:0a:00.3"],
    ]
    assert (
        "Note: added 0000:0a:00.2 (USB controller, xhci_hcd): it shares the slot and IOMMU group of 0000:0a:00.0"
        in " ".join(out.split())
    )
    assert (
        "resize_bar" not in (tmp_path / "profiles/gaming.yaml").read_text()
    )  # an NVIDIA card: no hint
    # The card is complete, so the group check passes; the XML lacks the two added functions and Code 43 settings.
    assert code == 0
    flat = " ".join(out.split())  # findings are wrapped to the terminal
    assert (
        "IOMMU group 16 of gpu (0000:0a:00.0), gpu-audio (0000:0a:00.1), gpu-usb (0000:0a:00.2), gpu-serial "
        "(0000:0a:00.3) holds nothing else that a host driver keeps" in flat
    )
    # Detached only so that the group is viable: no <hostdev> is needed, and none is asked for.
    assert (
        "gpu-usb (0000:0a:00.2, USB controller) has no <hostdev>: it is detached so that IOMMU "
        "group 16 is viable, which needs no <hostdev>; the VM does not see it" in flat
    )
    assert "gpu-serial (0000:0a:00.3, Serial bus controller) has no <hostdev>" in flat
    # init's note still offers the <hostdev>, for a guest that should use the port
    assert "the profile detaches gpu-usb" not in flat


def test_mixed_group_profile_is_written_and_check_says_what_is_wrong(tmp_path):
    root = host_tree(tmp_path, "mixed")
    code, out, _ = init(tmp_path, root, hostdev_xml("win10", "0000:03:00.0", "0000:03:00.1"))
    assert code == 1
    assert load_profile(tmp_path / "profiles/win10.yaml").devices == {
        "gpu": "0000:03:00.0",
        "gpu-audio": "0000:03:00.1",
    }
    assert "also holds 0000:02:00.0 (USB controller, xhci_hcd)" in " ".join(out.split())
    assert out.endswith("fix the errors before starting win10.\n")


def test_an_existing_profile_is_kept_unless_forced(tmp_path):
    existing = tmp_path / "profiles" / "win10.yaml"
    existing.parent.mkdir()
    existing.write_text("# mine\n")
    xml = hostdev_xml("win10", "0000:03:00.0", "0000:03:00.1")
    code, _, err = init(tmp_path, DEMO, xml)
    assert code == 2 and existing.read_text() == "# mine\n"
    assert err == (
        f"passthrough-hook: {existing} exists; change it with `passthrough-hook edit win10`, or replace "
        f"it with `passthrough-hook init --force win10`\n"
    )
    code, _, _ = init(tmp_path, DEMO, xml, "--force")
    assert load_profile(existing).devices == {"gpu": "0000:03:00.0", "gpu-audio": "0000:03:00.1"}
    assert not list(existing.parent.glob(".*.tmp"))


def test_domain_without_hostdev_is_refused_with_how_to_add_one(tmp_path):
    code, _, err = init(tmp_path, DEMO, "<domain><name>win10</name><devices/></domain>")
    assert code == 2 and not (tmp_path / "profiles").exists()
    assert (
        "the domain has no PCI <hostdev>, so there is nothing to prepare; add the GPU to the VM first"
        in err
    )


def test_address_not_on_the_host_is_kept_and_reported(tmp_path):
    code, out, _ = init(tmp_path, DEMO, hostdev_xml("win10", "0000:03:00.0", "0000:0b:00.0"))
    assert code == 1
    assert load_profile(tmp_path / "profiles/win10.yaml").devices == {
        "gpu": "0000:03:00.0",
        "gpu-audio": "0000:03:00.1",
        "missing": "0000:0b:00.0",
    }
    flat = " ".join(out.split())
    assert "Note: 0000:0b:00.0 from the XML is not a PCI device of this host" in flat
    assert "missing (0000:0b:00.0) is not a PCI device of this host" in flat


def fn(address, pci_class, group="1"):
    return PciFunction(address, "1002", "0000", pci_class, None, group, (), False)


def test_names_follow_the_card_and_the_class():
    functions = [
        fn("0000:03:00.0", 0x030000),
        fn("0000:03:00.1", 0x040300),
        fn("0000:08:00.0", 0x030000),
        fn("0000:08:00.1", 0x040300),
        fn("0000:08:00.2", 0x0C0330),
        fn("0000:05:00.0", 0x020000),
        fn("0000:06:00.0", 0x020000),
        fn("0000:07:00.0", 0x010802),
        fn("0000:09:00.0", 0x118000),
    ]
    assert suggest_names(functions) == {
        "0000:03:00.0": "gpu",
        "0000:03:00.1": "gpu-audio",
        "0000:05:00.0": "nic",
        "0000:06:00.0": "nic-2",
        "0000:07:00.0": "nvme",
        "0000:08:00.0": "gpu2",
        "0000:08:00.1": "gpu2-audio",
        "0000:08:00.2": "gpu2-usb",
        "0000:09:00.0": "signal-processing",  # by its class name, never a bare "device"
    }
    # A card the profile already names keeps that name as the prefix of its other functions.
    assert (
        suggest_names(functions[:2], known={"0000:03:00.0": "rx6750"})["0000:03:00.1"]
        == "rx6750-audio"
    )


# --- reading the XML from libvirt --------------------------------------------------------------


class FakeLibvirtError(Exception):
    def get_error_message(self):
        return str(self)


def fake_libvirt(monkeypatch, lookup):
    """A stand-in for the libvirt module: openReadOnly gives a connection whose lookupByName
    calls `lookup(name)`."""
    module = types.ModuleType("libvirt")
    module.libvirtError = FakeLibvirtError
    module.registerErrorHandler = lambda handler, ctx: None
    opened = []

    class Connection:
        def lookupByName(self, name):
            return types.SimpleNamespace(XMLDesc=lambda flags: lookup(name))

        def close(self):
            opened.append("closed")

    def open_read_only(uri):
        opened.append(uri)
        return Connection()

    module.openReadOnly = open_read_only
    monkeypatch.setitem(sys.modules, "libvirt", module)
    return opened


def test_xml_from_libvirt_read_only(monkeypatch):
    opened = fake_libvirt(monkeypatch, lambda name: f"<domain><name>{name}</name></domain>")
    assert (
        from_libvirt("win10", "qemu:///system", LOOKUP_TIMEOUT)
        == "<domain><name>win10</name></domain>"
    )
    assert opened == ["qemu:///system", "closed"]


def test_unknown_domain_in_libvirt(monkeypatch):
    def lookup(name):
        raise FakeLibvirtError(f"Domain not found: no domain with matching name '{name}'")

    fake_libvirt(monkeypatch, lookup)
    with pytest.raises(DomainXmlError) as caught:
        from_libvirt("win11", "qemu:///system", LOOKUP_TIMEOUT)
    assert (
        caught.value.reason
        == "libvirt (qemu:///system): Domain not found: no domain with matching name 'win11'"
    )
    assert caught.value.fix.startswith(
        "check the name with `virsh list --all`, or pass the XML with --xml FILE"
    )


def test_a_stuck_libvirt_is_given_up_on(monkeypatch):
    release = threading.Event()
    fake_libvirt(monkeypatch, lambda name: release.wait(10) and "")
    try:
        with pytest.raises(DomainXmlError) as caught:
            from_libvirt("win10", "qemu:///system", 0.05)
    finally:
        release.set()
    assert (
        caught.value.reason
        == "libvirt (qemu:///system) did not answer within 0.05 s (is libvirtd stuck?)"
    )


def test_a_profile_that_cannot_be_written_is_a_one_line_error(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    code, _, err = command(
        "init",
        "--root",
        DEMO,
        "--config-dir",
        tmp_path / "not-a-dir",
        "--xml",
        REPO / "config/win10.xml",
        "win10",
    )
    assert (
        code == 2
        and err == f"passthrough-hook: cannot write {tmp_path}/not-a-dir/win10.yaml: File exists\n"
    )
