"""Config directories for the scale figures: the seed profile plus many generated ones.

Generated profiles look like what people write (a GPU and its audio function, sometimes
a USB controller; libvirt or sysfs route; a resize; explicit release steps) and all of
them validate, so `validate` over the directory does the full work for each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED_PROFILE = REPO / "config" / "win10.yaml"

_TEMPLATES = (
    """\
# {name}: a GPU with Resizable BAR, detached through libvirt
devices:
  gpu: "{video}"
  gpu-audio: "{audio}"
prepare/begin:
  - modprobe: [vfio, vfio_iommu_type1, vfio_pci]
  - detach: [gpu, gpu-audio]
  - resize_bar: {{device: gpu, bar: 2, size: 8MiB}}
""",
    """\
# {name}: sysfs route, explicit release
devices:
  gpu: "{video}"
  gpu-audio: "{audio}"
  usb: "{usb}"
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: {{devices: [gpu, gpu-audio, usb], via: sysfs}}
    timeout: 30
release/end:
  - undo: prepare/begin
""",
    """\
# {name}: bind by name, give the audio function back early
devices:
  gpu: "{video}"
  gpu-audio: "{audio}"
prepare/begin:
  - modprobe: [vfio_pci]
  - bind: {{devices: [gpu, gpu-audio], driver: vfio-pci}}
  - resize_bar: {{device: gpu, bar: 0, size: 256MiB}}
    force: true
stopped/end:
  - reattach: {{devices: [gpu-audio], via: sysfs}}
""",
)


def profile_text(number: int) -> str:
    bus = 0x10 + number % 0xE0
    slot = number // 0xE0 % 0x20
    base = f"0000:{bus:02x}:{slot:02x}"
    return _TEMPLATES[number % len(_TEMPLATES)].format(
        name=domain_name(number), video=f"{base}.0", audio=f"{base}.1", usb=f"{base}.2"
    )


def domain_name(number: int) -> str:
    return f"vm-{number:04d}"


def make_config_dir(path: Path, count: int) -> Path:
    """`path` holding `count` profiles: the seed's win10.yaml and count - 1 generated ones."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SEED_PROFILE, path / "win10.yaml")
    for number in range(1, count):
        (path / f"{domain_name(number)}.yaml").write_text(profile_text(number))
    return path
