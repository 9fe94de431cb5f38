"""Helpers for the tests of the profile-editing commands (passthrough/tools): host trees
from tests/hosts.py written to a temporary directory (the program runs through
runs.command)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hosts import HOSTS, write_tree

REPO = Path(__file__).resolve().parent.parent

# A few pci.ids entries, in the database's layout (vendors, tab-indented devices and
# subsystems, then the class section), so names do not depend on this machine's copy.
PCI_IDS = """\
# test excerpt of pci.ids
1002  Advanced Micro Devices, Inc. [AMD/ATI]
\t67df  Ellesmere [Radeon RX 470/480/570/570X/580/580X/590]
\t\t1002 0b37  Radeon RX 580
\t73df  Navi 22 [Radeon RX 6700/6700 XT/6750 XT / 6800M/6850M XT]
\tab28  Navi 21/23 HDMI/DP Audio Controller
10de  NVIDIA Corporation
\t1f02  TU106 [GeForce RTX 2070]
1b21  ASMedia Technology Inc.
\t2142  ASM2142/ASM3142 USB 3.1 Host Controller
C 03  Display controller
\t00  VGA compatible controller
"""


def host_tree(tmp_path: Path, name: str, directory: str | None = None, **changes) -> Path:
    """Write host shape `name` (with HostSpec fields replaced by `changes`) under tmp_path."""
    spec = dataclasses.replace(HOSTS[name](), **changes)
    root = tmp_path / (directory or name)
    write_tree(spec, root)
    return root


def add_pci_ids(root: Path) -> Path:
    path = root / "usr/share/misc/pci.ids"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PCI_IDS)
    return path


def write_profile(directory: Path, domain: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{domain}.yaml"
    path.write_text(text)
    return path


def hostdev_xml(name: str, *addresses: str, managed: str = "yes", features: str = "") -> str:
    devices = "".join(
        f"<hostdev mode='subsystem' type='pci' managed='{managed}'><source><address domain='0x{a[0:4]}' "
        f"bus='0x{a[5:7]}' slot='0x{a[8:10]}' function='0x{a[11]}'/></source></hostdev>"
        for a in addresses
    )
    return (
        f"<domain type='kvm'><name>{name}</name><features>{features}</features>"
        f"<devices>{devices}</devices></domain>"
    )
