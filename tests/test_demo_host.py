"""The bundled demo host is what tests/hosts.py generates, shaped like the real kernel's sysfs."""

import os
from pathlib import Path

from hosts import demo_host, write_tree
from test_cli import tree_digest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "config" / "demo-host"


def test_committed_demo_host_is_current(tmp_path):
    write_tree(demo_host(), tmp_path / "host")
    assert tree_digest(tmp_path / "host") == tree_digest(DEMO), (
        "regenerate with: python3 tests/hosts.py demo config/demo-host"
    )


def test_demo_host_has_the_kernel_layout():
    gpu = DEMO / "sys/bus/pci/devices/0000:03:00.0"
    assert (
        gpu.is_symlink()
        and os.readlink(gpu) == "../../../devices/pci0000:00/0000:00:03.1/0000:03:00.0"
    )
    assert os.path.basename(os.readlink(gpu / "driver")) == "amdgpu"
    assert os.path.basename(os.readlink(gpu / "iommu_group")) == "14"
    assert (DEMO / "sys/kernel/iommu_groups/14/devices/0000:03:00.1").resolve() == (
        DEMO / "sys/bus/pci/devices/0000:03:00.1"
    ).resolve()
    assert (gpu / "resource2_resize").read_text() == "00000000000001fe\n"  # 2 MiB .. 256 MiB
    start, end, _ = (int(x, 16) for x in (gpu / "resource").read_text().splitlines()[2].split())
    assert end - start + 1 == 256 << 20
