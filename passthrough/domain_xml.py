"""The domain XML libvirt writes on the hook's stdin, reduced to what actions may need: the
domain's name and the PCI functions it takes from the host.

libvirt sends the full live XML on prepare/begin (defaults filled in, every `<hostdev>`).
A PCI function reaches a guest as `<hostdev mode='subsystem' type='pci'>` or, for network
functions (SR-IOV), as `<interface type='hostdev'>`; both carry `<source><address .../>`.

`read` is the one place a domain XML becomes a tree (the hook's actions and the tools all
go through it), never on the hook's fast path. The hook must not crash
on what it is given: text that is not well-formed XML, or not a `<domain>`, gives an empty
DomainXml whose `problems` say why, and a malformed hostdev address is skipped and reported
the same way. A document type declaration is refused outright: libvirt never writes one, and
it is what entity expansion (a "billion laughs" bomb) and external entities (reads of files
or URLs) need.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from .record import record

# Far above any real domain XML (libvirt's RPC caps a string at 4 MiB).
MAX_CHARS = 16 * 1024 * 1024

# PCI address parts as libvirt writes them (`bus='0x01'`), with their largest values.
_ADDRESS_PARTS = (("domain", 0xFFFF), ("bus", 0xFF), ("slot", 0x1F), ("function", 0x7))


@record(frozen=True)
class Hostdev:
    address: str  # "0000:01:00.0", the form profiles use
    managed: bool  # managed='yes': libvirt detaches and reattaches it itself


@record(frozen=True)
class DomainXml:
    name: str | None = None
    hostdevs: tuple[Hostdev, ...] = ()
    problems: tuple[str, ...] = ()  # what could not be read, for a warning; empty when all was read

    @property
    def hostdev_addresses(self) -> list[str]:
        return [hostdev.address for hostdev in self.hostdevs]


class Unreadable(ValueError):
    """The text is not a domain XML the hook reads; the message says why."""


def read(text: str) -> ElementTree.Element:
    """The <domain> element of a domain XML: the one place the hook and the tools turn the
    text into a tree, with the size limit and the refusal of document type declarations.
    Raises Unreadable saying what is wrong."""
    if not text.strip():
        raise Unreadable("no domain XML was given")
    if len(text) > MAX_CHARS:
        raise Unreadable(f"the domain XML is larger than {MAX_CHARS} characters; not read")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise Unreadable(
            "the domain XML has a document type declaration, which libvirt never writes; not read"
        )
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise Unreadable(f"the domain XML is not well-formed: {exc}") from None
    if root.tag != "domain":
        raise Unreadable(f"the XML's root element is <{root.tag}>, not <domain>")
    return root


def parse(text: str) -> DomainXml:
    """Read the name and PCI hostdevs from a domain XML; never raises."""
    try:
        root = read(text)
    except Unreadable as exc:
        return DomainXml(problems=(str(exc),))
    return of_element(root)


def of_element(root: ElementTree.Element) -> DomainXml:
    """The name and PCI hostdevs of a <domain> element read by `read`."""
    name = (root.findtext("name") or "").strip() or None
    hostdevs: list[Hostdev] = []
    problems: list[str] = []
    for element in root.iterfind("devices/*"):
        if not _is_pci_hostdev(element):
            continue
        source = element.find("source/address")
        try:
            address = _pci_address(source)
        except ValueError as exc:
            problems.append(f"<{element.tag}> skipped: {exc}")
            continue
        hostdevs.append(Hostdev(address, managed=element.get("managed", "no") == "yes"))
    return DomainXml(name, tuple(hostdevs), tuple(problems))


def _is_pci_hostdev(element: ElementTree.Element) -> bool:
    if element.tag == "hostdev":
        return element.get("mode", "subsystem") == "subsystem" and element.get("type") == "pci"
    if element.tag == "interface":
        source = element.find("source/address")
        return (
            element.get("type") == "hostdev"
            and source is not None
            and source.get("type", "pci") == "pci"
        )
    return False


def _pci_address(source: ElementTree.Element | None) -> str:
    """`<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>` as "0000:01:00.0"."""
    if source is None:
        raise ValueError("no <source><address/>")
    values = []
    for part, largest in _ADDRESS_PARTS:
        raw = source.get(part, "0" if part == "domain" else None)
        if raw is None:
            raise ValueError(f"its address has no {part}")
        try:
            value = int(raw, 0)  # libvirt writes 0x01; decimal is accepted in input XML
        except ValueError:
            raise ValueError(f"its address has {part}={raw!r}, not a number") from None
        if not 0 <= value <= largest:
            raise ValueError(f"its address has {part}={raw!r}, outside 0..{largest:#x}")
        values.append(value)
    domain, bus, slot, function = values
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"
