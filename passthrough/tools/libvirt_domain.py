"""A domain's XML for the tools: from a file or from libvirt (read-only, bounded in time),
with its PCI <hostdev>s (read by passthrough.domain_xml, as the hook reads them) and the
Hyper-V / KVM features behind Code 43.

These commands run outside a hook, so a libvirt domain lookup is allowed here (from
inside a hook it would deadlock); it still gets a timeout, as a stuck libvirtd must not
hang a terminal.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from ..domain_xml import Hostdev
from ..errors import EXIT_USAGE, PassthroughError

LOOKUP_TIMEOUT = 10.0


class DomainXmlError(PassthroughError):
    """The XML could not be read. `reason` says why, `fix` how to get it another way."""

    exit_code = EXIT_USAGE

    def __init__(self, reason: str, fix: str):
        self.reason = reason
        self.fix = fix
        super().__init__(f"{reason}; {fix}")


@dataclass
class DomainXml:
    source: str  # the file, or "libvirt <uri>"
    name: str | None
    hostdevs: tuple[Hostdev, ...] = ()  # (address, managed)
    hyperv: bool = False  # <features><hyperv> present
    vendor_id: str | None = None  # <hyperv><vendor_id state='on' value=.../>
    kvm_hidden: bool = False  # <kvm><hidden state='on'/>
    # The guest's OS: "windows", "macos", "linux" (or another non-Windows OS), None when the
    # XML does not say; os_id is virt-manager's libosinfo id (http://microsoft.com/win/10).
    guest_os: str | None = None
    os_id: str | None = None
    problems: list[str] = field(default_factory=list)  # hostdevs that could not be read
    uuid: str | None = None
    # (PCI address, file) of each <hostdev><rom file=.../>: QEMU opens the file at start.
    roms: tuple[tuple[str, str], ...] = ()

    def hostdev(self, address: str) -> Hostdev | None:
        return next((h for h in self.hostdevs if h.address == address), None)


def load(domain: str, xml_file: str | None, uri: str, timeout: float = LOOKUP_TIMEOUT) -> DomainXml:
    if xml_file == "-":
        import sys

        return parse(sys.stdin.read(), "stdin")
    if xml_file:
        try:
            text = Path(xml_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise DomainXmlError(
                f"{xml_file}: cannot read the domain XML: {exc.strerror}",
                f"write it with `virsh dumpxml {domain} > {xml_file}`",
            ) from None
        return parse(text, xml_file)
    return parse(from_libvirt(domain, uri, timeout), f"libvirt {uri}")


def from_libvirt(domain: str, uri: str, timeout: float) -> str:
    """The domain's XML through a read-only connection, or DomainXmlError saying why not."""
    fallback = f"pass the XML with --xml FILE (`virsh dumpxml {domain} > {domain}.xml`)"
    try:
        import libvirt
    except ImportError:
        raise DomainXmlError(
            "the libvirt Python bindings are not installed (python3-libvirt)", fallback
        ) from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stray prints on stderr
    outcome: dict = {}

    def lookup() -> None:
        try:
            connection = libvirt.openReadOnly(uri)
            try:
                outcome["xml"] = connection.lookupByName(domain).XMLDesc(0)
            finally:
                connection.close()
        except libvirt.libvirtError as exc:
            outcome["error"] = exc.get_error_message()

    worker = threading.Thread(target=lookup, name="libvirt lookup", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise DomainXmlError(
            f"libvirt ({uri}) did not answer within {timeout:g} s (is libvirtd stuck?)", fallback
        )
    if "error" in outcome:
        raise DomainXmlError(
            f"libvirt ({uri}): {outcome['error']}",
            f"check the name with `virsh list --all`, or {fallback}",
        )
    return outcome["xml"]


def parse(text: str, source: str) -> DomainXml:
    from .. import domain_xml

    fix = "write it with `virsh dumpxml DOMAIN > FILE`"
    try:
        tree = domain_xml.read(text)  # refuses DOCTYPEs (entity bombs) before parsing
    except domain_xml.Unreadable as exc:
        raise DomainXmlError(f"{source}: {exc}", fix) from None
    devices = domain_xml.of_element(tree)
    if devices.problems and devices.name is None and not devices.hostdevs:
        raise DomainXmlError(f"{source}: {devices.problems[0]}", fix)
    result = DomainXml(
        source=source, name=devices.name, hostdevs=devices.hostdevs, problems=list(devices.problems)
    )
    result.uuid = (tree.findtext("uuid") or "").strip() or None
    result.roms = tuple(_roms(tree))
    result.os_id, result.guest_os = guest_os(tree)
    features = tree.find("./features")
    if features is not None:
        hyperv = features.find("./hyperv")
        result.hyperv = hyperv is not None
        vendor = hyperv.find("./vendor_id") if hyperv is not None else None
        if vendor is not None and vendor.get("state") == "on" and vendor.get("value"):
            result.vendor_id = vendor.get("value")
        hidden = features.find("./kvm/hidden")
        result.kvm_hidden = hidden is not None and hidden.get("state") == "on"
    return result


def _roms(tree: ElementTree.Element) -> list[tuple[str, str]]:
    from ..domain_xml import _pci_address

    found = []
    for hostdev in tree.iterfind("devices/hostdev"):
        rom = hostdev.find("rom")
        if rom is None or not rom.get("file"):
            continue
        try:
            address = _pci_address(hostdev.find("source/address"))
        except ValueError:
            continue
        found.append((address, rom.get("file", "")))
    return found


LIBOSINFO = "{http://libosinfo.org/xmlns/libvirt/domain/1.0}"
QEMU_NS = "{http://libvirt.org/schemas/domain/qemu/1.0}"


def guest_os(root: ElementTree.Element) -> tuple[str | None, str | None]:
    """(libosinfo id, OS family) of the guest. virt-manager records the OS it was told in
    <metadata><libosinfo:os id='http://microsoft.com/win/10'/>; macOS setups (OSX-KVM) pass
    Apple's SMC on the QEMU command line; Hyper-V enlightenments are set for Windows only."""
    element = root.find(f"./metadata/{LIBOSINFO}libosinfo/{LIBOSINFO}os")
    os_id = element.get("id") if element is not None else None
    if os_id:
        if "microsoft.com/win" in os_id:
            return os_id, "windows"
        if "apple.com" in os_id:
            return os_id, "macos"
        return os_id, "linux"
    arguments = " ".join(
        arg.get("value", "") for arg in root.iterfind(f"./{QEMU_NS}commandline/{QEMU_NS}arg")
    )
    if "applesmc" in arguments:
        return None, "macos"
    if root.find("./features/hyperv") is not None:
        return None, "windows"
    return None, None


def hostdev_snippet(address: str) -> str:
    """The <hostdev> element for one PCI function, to paste into `virsh edit`."""
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    return (
        f"<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x{domain}' "
        f"bus='0x{bus}' slot='0x{slot}' function='0x{function}'/></source></hostdev>"
    )
