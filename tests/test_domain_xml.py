"""The domain XML on the hook's stdin: always read, parsed on demand, never a crash.

The libvirt tiers check the same against real daemons: tests/guest/test_libvirt_in_guest.py
parses the XML a real libvirtd wrote for a domain with two hostdevs.
"""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from passthrough.domain_xml import DomainXml, Hostdev, parse
from passthrough.hook import hook_main

HOOK = Path(__file__).resolve().parent.parent / "hooks" / "qemu"

# Shaped like libvirt 9's live XML on prepare/begin: defaults filled in, aliases, a PCI
# address for every device, and the two hostdevs after other devices.
LIVE_XML = """\
<domain type='qemu' id='1'>
  <name>win10</name>
  <uuid>6187e7d4-a28e-437e-b123-d307d41f8a20</uuid>
  <memory unit='KiB'>65536</memory>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' index='0' model='piix3-uhci'>
      <alias name='usb'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <driver name='vfio'/>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
      <alias name='hostdev0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/></source>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </hostdev>
    <hostdev mode='subsystem' type='usb' managed='yes'>
      <source><vendor id='0x046d'/><product id='0xc52b'/></source>
    </hostdev>
    <interface type='hostdev' managed='yes'>
      <source><address type='pci' domain='0x0001' bus='0x3b' slot='0x10' function='0x7'/></source>
    </interface>
    <interface type='network'><source network='default'/></interface>
  </devices>
</domain>
"""


def test_name_and_pci_hostdevs_in_document_order():
    domain = parse(LIVE_XML)
    assert domain == DomainXml(
        name="win10",
        hostdevs=(
            Hostdev("0000:01:00.0", managed=False),
            Hostdev("0000:01:00.1", managed=True),
            Hostdev("0001:3b:10.7", managed=True),
        ),
    )
    assert domain.hostdev_addresses == ["0000:01:00.0", "0000:01:00.1", "0001:3b:10.7"]


def test_a_domain_without_hostdevs():
    assert parse("<domain type='qemu'><name>plain</name><devices/></domain>") == DomainXml(
        name="plain"
    )


def test_decimal_parts_and_a_missing_pci_domain_are_read_as_libvirt_reads_them():
    xml = (
        "<domain><name>x</name><devices><hostdev mode='subsystem' type='pci'>"
        "<source><address bus='10' slot='0x1f' function='7'/></source></hostdev></devices></domain>"
    )
    assert parse(xml).hostdev_addresses == ["0000:0a:1f.7"]


@pytest.mark.parametrize(
    "address, problem",
    [
        ("bus='0x01' slot='0x00'", "<hostdev> skipped: its address has no function"),
        (
            "bus='0x01' slot='0x20' function='0'",
            "<hostdev> skipped: its address has slot='0x20', outside 0..0x1f",
        ),
        (
            "bus='one' slot='0' function='0'",
            "<hostdev> skipped: its address has bus='one', not a number",
        ),
    ],
)
def test_a_malformed_hostdev_address_is_skipped_and_reported(address, problem):
    xml = (
        f"<domain><name>x</name><devices>"
        f"<hostdev mode='subsystem' type='pci'><source><address {address}/></source></hostdev>"
        f"<hostdev mode='subsystem' type='pci'><source><address bus='2' slot='0' function='0'/></source>"
        f"</hostdev></devices></domain>"
    )
    domain = parse(xml)
    assert domain.hostdev_addresses == ["0000:02:00.0"]
    assert domain.problems == (problem,)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "no domain XML was given"),
        ("<network><name>x</name></network>", "the XML's root element is <network>, not <domain>"),
    ],
)
def test_xml_that_is_not_a_domain_gives_an_empty_result(text, problem):
    assert parse(text) == DomainXml(problems=(problem,))


@pytest.mark.parametrize(
    "text, position",
    [
        ("<domain><name>x</name>", "line 1, column 22"),
        ("\x00\xff garbage", "line 1, column 0"),
        ("<domain><name>x</nam></domain>", "line 1, column 17"),
    ],
)
def test_malformed_xml_gives_an_empty_result_not_an_exception(text, position):
    domain = parse(text)
    assert (domain.name, domain.hostdevs) == (None, ())
    [problem] = domain.problems
    # expat's wording varies between versions; the position does not.
    assert problem.startswith("the domain XML is not well-formed: ") and problem.endswith(position)


def test_entities_are_never_expanded_nor_fetched(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root-only")
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE domain [<!ENTITY a "aaaaaaaaaa">'
        + "".join(
            f'<!ENTITY {chr(98 + i)} "&{chr(97 + i)};&{chr(97 + i)};&{chr(97 + i)};">'
            for i in range(8)
        )
        + "]><domain><name>&i;</name></domain>"
    )
    external = (
        f'<!DOCTYPE domain [<!ENTITY s SYSTEM "file://{secret}">]><domain><name>&s;</name></domain>'
    )
    for text in (bomb, external):
        domain = parse(text)
        assert domain.name is None and domain.hostdevs == ()
        assert "document type declaration" in domain.problems[0]


# --- the XML is always read from stdin, so libvirt never writes into a pipe nobody reads -----


def test_the_fast_path_reads_all_of_a_large_xml(tmp_path):
    """libvirt writes the XML while the hook runs; a hook exiting unread makes that write fail."""
    xml = LIVE_XML.replace("</devices>", "<!--" + "x" * (4 << 20) + "--></devices>").encode()
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PASSTHROUGH_HOOK_CONFIG_DIR": str(tmp_path)}
    hook = subprocess.Popen(
        ["/usr/bin/python3", "-I", str(HOOK), "no-profile", "prepare", "begin", "-"],
        stdin=subprocess.PIPE,
        env=env,
    )
    try:
        hook.stdin.write(xml)  # BrokenPipeError if the hook exited without reading it all
        hook.stdin.close()
    finally:
        assert hook.wait(timeout=60) == 0


@pytest.mark.parametrize("domain", ["validate", "-x", "--help"])
def test_the_hook_takes_any_domain_name_as_a_domain(domain, tmp_path, monkeypatch, capsys):
    """A domain named like a subcommand or an option is still a domain: its XML is read and,
    without a profile, nothing is done (not `validate prepare begin -`, not a usage error)."""
    monkeypatch.setenv("PASSTHROUGH_HOOK_CONFIG_DIR", str(tmp_path))
    stdin = io.StringIO(LIVE_XML)
    monkeypatch.setattr(sys, "stdin", stdin)
    assert hook_main([domain, "prepare", "begin", "-"]) == 0
    assert stdin.tell() == len(LIVE_XML)
    assert capsys.readouterr() == ("", "")
    assert not os.listdir(tmp_path)
