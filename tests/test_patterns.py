"""The string tests that replaced patterns on the hook's path answer as the patterns did
(the patterns are kept here as the reference), and Lazy compiles only when used."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from passthrough.constants import PCI_ADDRESS
from passthrough.cpulist import cpu_range
from passthrough.holders import is_sound_node
from passthrough.host.sysfs import can_block, locked_device
from passthrough.host.vga import is_sysfb_device
from passthrough.patterns import Lazy
from passthrough.units import is_pci_address

LOCKED_READ = re.compile(r"(?:^|/)([^/]+)/driver_override$")
BLOCKING = re.compile(
    r"(/unbind|/bind|^bus/pci/drivers_probe|/remove|/rescan|/resource\d+_resize)$"
)
SOUND_NODE = re.compile(r"^(controlC|pcmC|hwC|midiC)\d+")
SYSFB_DEVICE = re.compile(r"(efi|simple|vesa)-framebuffer\.\d+")

_PIECES = [
    "bus",
    "pci",
    "devices",
    "drivers",
    "0000:03:00.0",
    "vfio-pci",
    "driver_override",
    "unbind",
    "bind",
    "remove",
    "rescan",
    "drivers_probe",
    "resource",
    "resource2_resize",
    "resource_resize",
    "resource12_resize",
    "x",
    "",
    "controlC",
    "pcmC0D3p",
    "hwC",
    "midiC",
    "efi-framebuffer.",
    "simple-framebuffer.0",
    "vesa",
    "0",
    "12",
    "٣",
    "-framebuffer.",
]
# Paths and names made of the pieces the kernel's files are made of, joined any way.
TEXT = st.lists(st.sampled_from(_PIECES), max_size=5).flatmap(
    lambda parts: st.sampled_from(["/", "", "."]).map(lambda sep: sep.join(parts))
)


@given(TEXT)
def test_locked_device_is_the_locked_read_pattern(rel):
    match = LOCKED_READ.search(rel)
    assert locked_device(rel) == (match.group(1) if match else None)


@given(TEXT)
def test_can_block_is_the_blocking_pattern(rel):
    assert can_block(rel) == bool(BLOCKING.search(rel))


@given(TEXT)
def test_sound_and_framebuffer_names_are_their_patterns(name):
    assert is_sound_node(name) == bool(SOUND_NODE.match(name))
    assert is_sysfb_device(name) == bool(SYSFB_DEVICE.fullmatch(name))


def test_the_kernels_own_names():
    assert locked_device("bus/pci/devices/0000:03:00.0/driver_override") == "0000:03:00.0"
    assert can_block("bus/pci/devices/0000:03:00.0/resource2_resize")
    assert can_block("bus/pci/drivers/vfio-pci/bind") and can_block("bus/pci/drivers_probe")
    assert not can_block("bus/pci/devices/0000:03:00.0/driver_override")
    assert is_sound_node("pcmC0D3p") and not is_sound_node("card0")
    assert is_sysfb_device("efi-framebuffer.0") and not is_sysfb_device("efi-framebuffer.")


def test_a_lazy_pattern_compiles_on_first_use():
    pattern = Lazy(r"(\d+)-(\d+)", re.ASCII)
    assert pattern._compiled is None
    assert pattern.fullmatch("3-12").groups() == ("3", "12")
    assert pattern._compiled is not None and pattern._compiled.flags & re.ASCII
    assert pattern.search("a 1-2").group(0) == "1-2"
    assert pattern.match("x1-2") is None
    assert pattern.findall("1-2 3-4") == [("1", "2"), ("3", "4")]
    assert [m.group(0) for m in pattern.finditer("1-2 3-4")] == ["1-2", "3-4"]


PCI_FULL = re.compile(PCI_ADDRESS)
PCI_SHORT = re.compile(PCI_ADDRESS.split(":", 1)[1])
_ADDRESS_CHARS = "0123456789abcdefABCDEFgx:. \n"


@given(
    st.one_of(
        st.text(alphabet=_ADDRESS_CHARS, max_size=14),
        st.from_regex(PCI_FULL, fullmatch=True),
        st.from_regex(PCI_SHORT, fullmatch=True),
    )
)
def test_is_pci_address_answers_as_the_pattern(text):
    assert is_pci_address(text) == bool(PCI_FULL.fullmatch(text))
    assert is_pci_address(text, domain=False) == bool(PCI_SHORT.fullmatch(text))


CPU_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


@given(st.text(alphabet="0123456789-٣ x\n", max_size=8) | st.from_regex(CPU_PART, fullmatch=True))
def test_cpu_range_answers_as_the_pattern(text):
    match = CPU_PART.match(text)
    if text.endswith("\n"):  # `$` before a final newline: parse_cpu_list strips each part
        return
    expected = None
    if match:
        first = int(match.group(1))
        expected = (first, int(match.group(2)) if match.group(2) is not None else first)
    assert cpu_range(text) == expected
