"""Host shapes for tests and the bundled demo host, written as sysfs-like trees.

A tree has the layout of the real kernel's: /sys/bus/pci/devices/X are symlinks into
/sys/devices/pci0000:00/..., each function has `driver` and `iommu_group` symlinks,
`resource` and, for Resizable BARs, `resourceN_resize`; drivers have bind/unbind files
and links to their devices; /proc/modules lists loaded modules.

`python3 tests/hosts.py demo config/demo-host` regenerates the bundled demo host
(a test checks the committed copy matches).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from system_facts import Process, System, write_system

# Device names for the trees: an excerpt of pci.ids (a tree carries the lines of its devices,
# as a snapshot does, so no test depends on this machine's database).
PCI_IDS = Path(__file__).resolve().parent / "pci.ids"

MiB = 1 << 20
GiB = 1 << 30

# PCI drivers whose module has another name (the `module` link of a driver directory);
# any other driver is registered by the module of its own name.
DRIVER_MODULES = {
    "xhci_hcd": "xhci_pci",
    "nvidia-gpu": "i2c_nvidia_gpu",
    "bochs-drm": "bochs",
    "vfio-pci": "vfio_pci",
    "pci-stub": "pci_stub",
}


def module_of(driver: str, spec: HostSpec | None = None) -> str:
    """The module that registers a PCI driver."""
    known = {**DRIVER_MODULES, **(spec.driver_modules if spec else {})}
    return known.get(driver, driver.replace("-", "_"))


@dataclass
class Bar:
    size: int  # bytes
    start: int
    resizable: tuple[int, ...] = ()  # supported sizes in MiB (a ReBAR capability)
    flags: int = 0x0014220C  # 64-bit prefetchable memory


@dataclass
class Function:
    address: str
    vendor: str
    device: str
    pci_class: str  # e.g. 0x030000
    driver: str | None
    group: int
    bridge: str | None = None  # address of the upstream bridge; None: on the root bus
    bars: dict[int, Bar] = field(default_factory=dict)
    reset_method: str = "bus"
    boot_vga: bool | None = None
    description: str = ""
    sriov_numvfs: int | None = None  # SR-IOV VFs enabled now (None: no SR-IOV capability)


@dataclass
class HostSpec:
    functions: list[Function]
    modules: list[str]  # loaded modules; PCI drivers named like them exist under drivers/
    drivers: list[str]  # PCI drivers registered (directories under /sys/bus/pci/drivers)
    builtin: list[str] = field(default_factory=list)
    cmdline: str = (
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-13-amd64 root=UUID=1c1b9c1e ro quiet amd_iommu=on iommu=pt"
    )
    cpu_vendor: str = "AuthenticAMD"
    kernel: str = "6.1.0-13-amd64"  # uname -r, as /proc/sys/kernel/osrelease shows it
    # /proc/version, written when it names `kernel` (the default's upstream version is 6.1.55).
    version: str = (
        "Linux version 6.1.0-13-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
        "12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC "
        "Debian 6.1.55-1 (2023-09-29)"
    )
    # Module files of the running kernel, relative to /lib/modules/<kernel> (names only:
    # written empty), and modules.builtin's lines. Debian 6.1's vfio by default.
    module_files: tuple[str, ...] = tuple(
        f"kernel/drivers/vfio/{name}.ko"
        for name in ("vfio", "vfio_iommu_type1", "vfio_virqfd", "pci/vfio-pci", "pci/vfio-pci-core")
    )
    modules_builtin: tuple[str, ...] = ("kernel/drivers/pci/pci-stub.ko",)
    # Also write lib/modules/<kernel>/modules.dep for module_files, as depmod does on real
    # hosts (fake modprobe then fails like the real one on a module that is not there).
    modules_dep: bool = False
    # /boot/config-<kernel> lines (none: no file).
    kernel_config: tuple[str, ...] = ()
    # Other files of the host, path relative to the root -> content (security policy state).
    files: dict[str, str] = field(default_factory=dict)
    iommu: bool = True  # False: the IOMMU is off (no intel_iommu=on), so no IOMMU groups
    # Module dependencies: module -> the modules it uses (nvidia_drm -> nvidia_modeset, drm).
    # /proc/modules shows them from the other side: refcount and the used-by column.
    module_deps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # References to a module other than its users (nvidia-persistenced holding /dev/nvidia*).
    module_refs: dict[str, int] = field(default_factory=dict)
    driver_modules: dict[str, str] = field(default_factory=dict)  # beyond DRIVER_MODULES
    # Consoles, framebuffers, CPUs, hugepages, cgroups, systemd, processes (system_facts.py).
    system: System = field(default_factory=System)


def _bridge(address: str, group: int, parent: str | None = None) -> Function:
    return Function(
        address,
        "0x1022",
        "0x1483",
        "0x060400",
        "pcieport",
        group,
        parent,
        description="PCIe GPP bridge",
    )


def demo_host() -> HostSpec:
    """The seed's machine: an AMD RX 6750 GRE for the VM (ReBAR on: BAR 0 16 GiB, BAR 2
    256 MiB), an Intel A380 that stays with the host for transcoding, NVMe, 2.5G NIC."""
    return HostSpec(
        functions=[
            _bridge("0000:00:01.1", 1),
            _bridge("0000:00:01.2", 2),
            _bridge("0000:00:03.1", 14),
            _bridge("0000:00:03.2", 15),
            Function(
                "0000:01:00.0",
                "0x144d",
                "0xa80a",
                "0x010802",
                "nvme",
                3,
                "0000:00:01.1",
                {0: Bar(16 * 1024, 0xFCF00000, flags=0x00140204)},
                reset_method="flr bus",
                description="Samsung 980 PRO NVMe SSD",
            ),
            Function(
                "0000:02:00.0",
                "0x8086",
                "0x15f3",
                "0x020000",
                "igc",
                4,
                "0000:00:01.2",
                {0: Bar(1 * MiB, 0xFCA00000, flags=0x00040200)},
                reset_method="flr bus",
                description="Intel I225-V 2.5GbE",
            ),
            Function(
                "0000:03:00.0",
                "0x1002",
                "0x73df",
                "0x030000",
                "amdgpu",
                14,
                "0000:00:03.1",
                {
                    0: Bar(16 * GiB, 0x7C00000000, resizable=tuple(1 << n for n in range(8, 15))),
                    2: Bar(256 * MiB, 0x7800000000, resizable=tuple(1 << n for n in range(1, 9))),
                },
                boot_vga=False,
                description="AMD Radeon RX 6750 GRE (Navi 22)",
            ),
            Function(
                "0000:03:00.1",
                "0x1002",
                "0xab28",
                "0x040300",
                "snd_hda_intel",
                14,
                "0000:00:03.1",
                {0: Bar(16 * 1024, 0xFCB20000, flags=0x00040200)},
                description="Navi 21/23 HDMI/DP audio",
            ),
            Function(
                "0000:04:00.0",
                "0x8086",
                "0x56a5",
                "0x030000",
                "i915",
                15,
                "0000:00:03.2",
                {
                    0: Bar(16 * MiB, 0xFB000000, flags=0x00140204),
                    2: Bar(8 * GiB, 0x7A00000000, resizable=tuple(1 << n for n in range(8, 14))),
                },
                boot_vga=True,
                description="Intel Arc A380 (host transcoding)",
            ),
        ],
        modules=["amdgpu", "i915", "snd_hda_intel", "nvme", "igc", "kvm_amd", "kvm"],
        drivers=["amdgpu", "i915", "snd_hda_intel", "nvme", "igc", "pcieport"],
        system=demo_system(),
    )


def demo_system() -> System:
    """The demo host's desktop side: a Ryzen 7 5800X (16 CPUs, acpi-cpufreq), GNOME on
    Wayland started by gdm3 under systemd, efifb and fbcon still bound, no hugepages yet.
    gnome-shell drives the A380 (card0); nothing holds the RX 6750 or its HDMI audio."""
    session = "/user.slice/user-1000.slice"
    user_manager = f"{session}/user@1000.service"
    return System(
        cpus=16,
        governors=(
            "conservative",
            "ondemand",
            "userspace",
            "powersave",
            "performance",
            "schedutil",
        ),
        governor="schedutil",
        hugepages={2048: 0, 1048576: 0},
        vtconsoles=(("(S) dummy device", False), ("(M) frame buffer device", True)),
        framebuffers=(("efi-framebuffer.0", "efi-framebuffer"),),
        cgroups={"init.scope": "", "system.slice": "", "user.slice": "", "machine.slice": ""},
        systemd=True,
        display_manager="gdm3.service",
        processes=(
            Process(1, "systemd", cgroup="/init.scope"),
            Process(1021, "gdm3", cgroup="/system.slice/gdm3.service"),
            Process(1490, "systemd", uid=1000, cgroup=f"{user_manager}/init.scope"),
            Process(
                1502,
                "gnome-shell",
                uid=1000,
                cgroup=f"{session}/session-2.scope",
                fds={14: "/dev/dri/card0"},
            ),
            Process(1577, "Xwayland", uid=1000, cgroup=f"{session}/session-2.scope"),
            Process(
                1560, "pipewire", uid=1000, cgroup=f"{user_manager}/session.slice/pipewire.service"
            ),
        ),
        drm={"0000:03:00.0": ("card1", "renderD129"), "0000:04:00.0": ("card0", "renderD128")},
        sound={"0000:03:00.1": (1, ("controlC1", "pcmC1D3p"))},
    )


def mixed_group_host() -> HostSpec:
    """An Intel desktop whose only free x16 slot hangs off the chipset: the chipset's root
    ports have no ACS, so the RX 580 shares IOMMU group 7 with the ASMedia USB controller
    the keyboard is on. Fedora kernel, compressed modules."""
    return HostSpec(
        functions=[
            Function(
                "0000:00:02.0",
                "0x8086",
                "0x4680",
                "0x030000",
                "i915",
                0,
                boot_vga=True,
                bars={0: Bar(16 * MiB, 0x6000000000, flags=0x00140204)},
                reset_method="flr",
                description="Intel UHD Graphics 770 (host display)",
            ),
            Function(
                "0000:00:14.0",
                "0x8086",
                "0x7ae0",
                "0x0c0330",
                "xhci_hcd",
                3,
                bars={0: Bar(64 * 1024, 0x6001100000, flags=0x00140204)},
                reset_method="pm",
                description="Intel Alder Lake-S PCH USB 3.2 xHCI",
            ),
            Function(
                "0000:00:17.0",
                "0x8086",
                "0x7ae2",
                "0x010601",
                "ahci",
                4,
                bars={5: Bar(2048, 0x80A00000, flags=0x00040200)},
                reset_method="pm",
                description="Intel Alder Lake-S PCH SATA controller [AHCI]",
            ),
            Function(
                "0000:00:1f.6",
                "0x8086",
                "0x1a1c",
                "0x020000",
                "e1000e",
                8,
                bars={0: Bar(128 * 1024, 0x80B00000, flags=0x00040200)},
                reset_method="flr",
                description="Intel Ethernet Connection (17) I219-V",
            ),
            Function(
                "0000:00:1c.0",
                "0x8086",
                "0x7ab8",
                "0x060400",
                "pcieport",
                7,
                description="Intel Alder Lake-S PCH PCI Express Root Port #1",
            ),
            Function(
                "0000:00:1c.4",
                "0x8086",
                "0x7abc",
                "0x060400",
                "pcieport",
                7,
                description="Intel Alder Lake-S PCH PCI Express Root Port #5",
            ),
            Function(
                "0000:02:00.0",
                "0x1b21",
                "0x2142",
                "0x0c0330",
                "xhci_hcd",
                7,
                "0000:00:1c.0",
                {0: Bar(32 * 1024, 0x80700000, flags=0x00140204)},
                reset_method="bus",
                description="ASMedia ASM2142 USB 3.1 Host Controller (keyboard, mouse)",
            ),
            Function(
                "0000:03:00.0",
                "0x1002",
                "0x67df",
                "0x030000",
                "amdgpu",
                7,
                "0000:00:1c.4",
                {0: Bar(256 * MiB, 0x4000000000), 2: Bar(2 * MiB, 0x4010000000)},
                boot_vga=False,
                description="AMD Radeon RX 580 (Ellesmere)",
            ),
            Function(
                "0000:03:00.1",
                "0x1002",
                "0xaaf0",
                "0x040300",
                "snd_hda_intel",
                7,
                "0000:00:1c.4",
                {0: Bar(16 * 1024, 0x80600000, flags=0x00040200)},
                description="Ellesmere HDMI audio",
            ),
        ],
        modules=[
            "i915",
            "amdgpu",
            "snd_hda_intel",
            "xhci_pci",
            "ahci",
            "e1000e",
            "kvm_intel",
            "kvm",
        ],
        drivers=["i915", "amdgpu", "snd_hda_intel", "xhci_hcd", "ahci", "e1000e", "pcieport"],
        cmdline="BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.6.9-200.fc39.x86_64 root=UUID=5d7e ro rhgb quiet intel_iommu=on",
        cpu_vendor="GenuineIntel",
        kernel="6.6.9-200.fc39.x86_64",
        module_files=tuple(
            f"kernel/drivers/vfio/{name}.ko.xz"
            for name in ("vfio", "vfio_iommu_type1", "pci/vfio-pci", "pci/vfio-pci-core")
        ),
        modules_builtin=("kernel/drivers/pci/pci-stub.ko", "kernel/drivers/usb/host/xhci-hcd.ko"),
    )


def nvidia_4_function_host() -> HostSpec:
    """A Ryzen host with a Turing RTX 2070: one card, four functions in one IOMMU group
    (video, HDMI audio, USB 3.1 xHCI, USB-C UCSI serial bus controller); an AMD Radeon
    stays with the host. Ubuntu kernel: vfio built in, compressed modules."""
    return HostSpec(
        functions=[
            _bridge("0000:00:01.2", 2),
            _bridge("0000:00:03.1", 16),
            _bridge("0000:00:03.2", 17),
            Function(
                "0000:01:00.0",
                "0x15b7",
                "0x5011",
                "0x010802",
                "nvme",
                9,
                "0000:00:01.2",
                {0: Bar(16 * 1024, 0xFC800000, flags=0x00140204)},
                reset_method="flr bus",
                description="WD Black SN850 NVMe SSD",
            ),
            Function(
                "0000:0a:00.0",
                "0x10de",
                "0x1f02",
                "0x030000",
                "nouveau",
                16,
                "0000:00:03.1",
                {
                    0: Bar(16 * MiB, 0xFB000000, flags=0x00040200),
                    1: Bar(256 * MiB, 0x7FE0000000),
                    3: Bar(32 * MiB, 0x7FF0000000),
                },
                boot_vga=False,
                description="NVIDIA GeForce RTX 2070 (TU106)",
            ),
            Function(
                "0000:0a:00.1",
                "0x10de",
                "0x10f9",
                "0x040300",
                "snd_hda_intel",
                16,
                "0000:00:03.1",
                {0: Bar(16 * 1024, 0xFC080000, flags=0x00040200)},
                description="TU106 HDMI audio",
            ),
            Function(
                "0000:0a:00.2",
                "0x10de",
                "0x1ada",
                "0x0c0330",
                "xhci_hcd",
                16,
                "0000:00:03.1",
                {0: Bar(256 * 1024, 0x7FF2000000)},
                description="TU106 USB 3.1 xHCI",
            ),
            Function(
                "0000:0a:00.3",
                "0x10de",
                "0x1adb",
                "0x0c8000",
                "nvidia-gpu",
                16,
                "0000:00:03.1",
                {0: Bar(4 * 1024, 0xFC084000, flags=0x00040200)},
                description="TU106 USB Type-C UCSI",
            ),
            Function(
                "0000:0b:00.0",
                "0x1002",
                "0x6779",
                "0x030000",
                "radeon",
                17,
                "0000:00:03.2",
                {0: Bar(256 * MiB, 0xE0000000, flags=0x0014220C)},
                boot_vga=True,
                description="AMD Radeon HD 6450 (host display)",
            ),
        ],
        modules=[
            "nouveau",
            "radeon",
            "snd_hda_intel",
            "xhci_pci",
            "i2c_nvidia_gpu",
            "nvme",
            "kvm_amd",
            "kvm",
        ],
        drivers=[
            "nouveau",
            "radeon",
            "snd_hda_intel",
            "xhci_hcd",
            "nvidia-gpu",
            "nvme",
            "pcieport",
        ],
        builtin=["vfio", "vfio_iommu_type1", "vfio_pci"],
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.5.0-14-generic root=UUID=0b8e ro quiet splash amd_iommu=on iommu=pt",
        kernel="6.5.0-14-generic",
        module_files=(),
        modules_builtin=tuple(
            f"kernel/drivers/vfio/{name}.ko"
            for name in ("vfio", "vfio_iommu_type1", "pci/vfio-pci", "pci/vfio-pci-core")
        ),
    )


def selinux_files(enforcing: bool = True, hooks_unconfined: bool | None = False) -> dict[str, str]:
    """SELinux's state under sys/fs/selinux, as Fedora 40+ has it: the boolean reads
    "current pending" (absent: a policy older than 2024)."""
    files = {"sys/fs/selinux/enforce": "1" if enforcing else "0"}
    if hooks_unconfined is not None:
        value = "1" if hooks_unconfined else "0"
        files["sys/fs/selinux/booleans/virt_hooks_unconfined"] = f"{value} {value}"
    return files


# Excerpts of libvirt's AppArmor files (src/security/apparmor/ upstream, Debian 12's
# /etc/apparmor.d): the rules the checks depend on, in their own layout.
LIBVIRTD_PROFILE = """\
#include <tunables/global>
profile libvirtd /usr/sbin/libvirtd flags=(attach_disconnected) {
  #include <abstractions/base>
  / r,
  /** rwmkl,
  /bin/* PUx,
  /sbin/* PUx,
  /usr/bin/* PUx,
  /usr/sbin/* PUx,
  audit deny /etc/apparmor.d/libvirt/** wxl,
  /etc/libvirt/hooks/** rmix,
  /usr/{lib,lib64,lib/qemu,libexec}/qemu-bridge-helper Cx -> qemu_bridge_helper,
  profile qemu_bridge_helper {
   /etc/qemu/** r,
  }
  #include <local/usr.sbin.libvirtd>
}
"""
LIBVIRT_QEMU_ABSTRACTION = """\
  #include <abstractions/base>
  # access to firmware's etc
  /usr/share/AAVMF/** rk,
  /usr/share/OVMF/** rk,
  /usr/share/qemu/** rk,
  /usr/share/seabios/** r,
  /usr/share/vgabios/** r,
  owner /var/lib/libvirt/qemu/nvram/*_VARS.fd rwk,
  #include <local/abstractions/libvirt-qemu>
"""
TEMPLATE_QEMU = """\
#include <tunables/global>
profile LIBVIRT_TEMPLATE flags=(attach_disconnected) {
  #include <abstractions/libvirt-qemu>
}
"""


def apparmor_files(libvirtd: str = LIBVIRTD_PROFILE, local_qemu: str = "") -> dict[str, str]:
    """AppArmor on, with libvirt's profiles as Debian/Ubuntu install them."""
    return {
        "sys/module/apparmor/parameters/enabled": "Y",
        "etc/apparmor.d/usr.sbin.libvirtd": libvirtd,
        "etc/apparmor.d/local/usr.sbin.libvirtd": "",
        "etc/apparmor.d/abstractions/libvirt-qemu": LIBVIRT_QEMU_ABSTRACTION,
        "etc/apparmor.d/local/abstractions/libvirt-qemu": local_qemu,
        "etc/apparmor.d/libvirt/TEMPLATE.qemu": TEMPLATE_QEMU,
    }


def _vfio_files(*names: str, suffix: str = ".ko") -> tuple[str, ...]:
    return tuple(f"kernel/drivers/vfio/{name}{suffix}" for name in names)


# The demo host's machine on the kernels users run, 5.15 to 6.12: what each builds as vfio
# modules. vfio_virqfd is a module of its own until 6.1 and part of vfio.ko from 6.2 on;
# a kernel built with CONFIG_VFIO_CONTAINER=n (iommufd only) has no vfio_iommu_type1.
KERNELS = {
    "5.15": dict(
        kernel="5.15.0-91-generic",
        module_files=_vfio_files(
            "vfio", "vfio_iommu_type1", "vfio_virqfd", "pci/vfio-pci", "pci/vfio-pci-core"
        ),
        kernel_config=(
            "CONFIG_VFIO=m",
            "CONFIG_VFIO_IOMMU_TYPE1=m",
            "CONFIG_VFIO_VIRQFD=m",
            "CONFIG_VFIO_PCI=m",
        ),
    ),
    "6.1": dict(
        kernel="6.1.0-13-amd64",
        module_files=_vfio_files(
            "vfio", "vfio_iommu_type1", "vfio_virqfd", "pci/vfio-pci", "pci/vfio-pci-core"
        ),
        kernel_config=(
            "CONFIG_VFIO=m",
            "CONFIG_VFIO_IOMMU_TYPE1=m",
            "CONFIG_VFIO_VIRQFD=m",
            "CONFIG_VFIO_PCI=m",
        ),
    ),
    "6.6-iommufd": dict(
        kernel="6.6.30-iommufd",
        module_files=(
            *_vfio_files("vfio", "pci/vfio-pci", "pci/vfio-pci-core", suffix=".ko.xz"),
            "kernel/drivers/iommu/iommufd/iommufd.ko.xz",
        ),
        kernel_config=(
            "CONFIG_VFIO=m",
            "# CONFIG_VFIO_CONTAINER is not set",
            "CONFIG_VFIO_VIRQFD=y",
            "CONFIG_VFIO_PCI=m",
            "CONFIG_IOMMUFD=m",
            "CONFIG_IOMMUFD_VFIO_CONTAINER=y",
        ),
    ),
    "6.12": dict(
        kernel="6.12.9-amd64",
        module_files=_vfio_files(
            "vfio", "vfio_iommu_type1", "pci/vfio-pci", "pci/vfio-pci-core", suffix=".ko.xz"
        ),
        kernel_config=(
            "CONFIG_VFIO=m",
            "CONFIG_VFIO_CONTAINER=y",
            "CONFIG_VFIO_IOMMU_TYPE1=m",
            "CONFIG_VFIO_VIRQFD=y",
            "CONFIG_VFIO_PCI=m",
        ),
    ),
}


def kernel_host(version: str) -> HostSpec:
    """The demo host running kernel `version` (a key of KERNELS), with modules.dep."""
    spec = demo_host()
    changes = KERNELS[version]
    spec.cmdline = spec.cmdline.replace("6.1.0-13-amd64", str(changes["kernel"]))
    for key, value in changes.items():
        setattr(spec, key, value)
    spec.modules_dep = True
    return spec


# The seed write-up's profile for the demo host's card (config/win10.yaml without comments),
# for tests that write it into their own config directories.
SEED_PROFILE = """\
devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}
prepare/begin:
  - modprobe: [vfio, vfio_iommu_type1, vfio_pci]
  - detach: [gpu, gpu-audio]
  - resize_bar: {device: gpu, bar: 2, size: 8MiB}
"""


def proc_modules(
    modules: list[str] | set[str],
    deps: dict[str, tuple[str, ...]],
    refs: dict[str, int],
    order: list[str] | None = None,
) -> str:
    """/proc/modules for these loaded modules: `name size refcount used,by, Live address`."""
    lines = []
    for module in order or modules:
        users = [m for m in (order or modules) if module in deps.get(m, ())]
        used_by = "".join(f"{u}," for u in users) or "-"
        count = len(users) + refs.get(module, 0)
        lines.append(f"{module} 65536 {count} {used_by} Live 0x0000000000000000")
    return "\n".join(lines)


def write_tree(spec: HostSpec, root: Path) -> None:
    """Write spec as a sysfs-like tree under root (sys/, proc/)."""
    sys_dir = root / "sys"
    paths: dict[str, Path] = {}

    def device_dir(fn: Function) -> Path:
        if fn.address not in paths:
            parent = sys_dir / "devices" / "pci0000:00"
            if fn.bridge:
                parent = device_dir(next(f for f in spec.functions if f.address == fn.bridge))
            paths[fn.address] = parent / fn.address
        return paths[fn.address]

    def put(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n" if text else "")

    def link(path: Path, target: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(target, path.parent), path)

    drivers = sys_dir / "bus" / "pci" / "drivers"
    for driver in spec.drivers:
        for name in ("bind", "unbind", "new_id", "remove_id"):
            put(drivers / driver / name, "")
        module = module_of(driver, spec)
        if module in spec.modules or module in spec.builtin:
            link(drivers / driver / "module", sys_dir / "module" / module)
    put(sys_dir / "bus" / "pci" / "drivers_probe", "")
    put(sys_dir / "bus" / "pci" / "rescan", "")
    put(sys_dir / "bus" / "pci" / "drivers_autoprobe", "1")
    for fn in spec.functions:
        d = device_dir(fn)
        for name, value in (
            ("vendor", fn.vendor),
            ("device", fn.device),
            ("class", fn.pci_class),
            ("subsystem_vendor", fn.vendor),
            ("subsystem_device", "0x0000"),
            ("driver_override", "(null)"),
            ("reset_method", fn.reset_method),
            ("remove", ""),
            ("enable", "1"),
            ("numa_node", "-1"),
            (
                "modalias",
                f"pci:v0000{fn.vendor[2:].upper()}d0000{fn.device[2:].upper()}"
                f"sv0000{fn.vendor[2:].upper()}sd00000000bc{fn.pci_class[2:4].upper()}"
                f"sc{fn.pci_class[4:6].upper()}i{fn.pci_class[6:8].upper()}",
            ),
        ):
            put(d / name, value)
        if fn.boot_vga is not None:
            put(d / "boot_vga", "1" if fn.boot_vga else "0")
        if fn.sriov_numvfs is not None:
            put(d / "sriov_numvfs", str(fn.sriov_numvfs))
        lines = []
        # BARs 0-5 and the ROM; a bridge's windows are lines 13-15 (14 memory, 15 prefetchable).
        for number in range(max(7, max(fn.bars, default=0) + 1)):
            bar = fn.bars.get(number)
            lines.append(
                "0x%016x 0x%016x 0x%016x"
                % ((bar.start, bar.start + bar.size - 1, bar.flags) if bar else (0, 0, 0))
            )
            if bar and bar.resizable:
                bitmap = sum(1 << (mib.bit_length() - 1) for mib in bar.resizable)
                put(d / f"resource{number}_resize", f"{bitmap:016x}")
        put(d / "resource", "\n".join(lines))
        link(sys_dir / "bus" / "pci" / "devices" / fn.address, d)
        if spec.iommu:
            group = sys_dir / "kernel" / "iommu_groups" / str(fn.group)
            put(group / "type", "DMA")
            link(group / "devices" / fn.address, d)
            link(d / "iommu_group", group)
        if fn.driver:
            link(d / "driver", drivers / fn.driver)
            link(drivers / fn.driver / fn.address, d)
    for module in spec.modules:
        put(sys_dir / "module" / module / "initstate", "live")
    for module in spec.builtin:
        (sys_dir / "module" / module).mkdir(parents=True, exist_ok=True)
    proc = root / "proc"
    put(proc / "modules", proc_modules(spec.modules, spec.module_deps, spec.module_refs))
    put(proc / "cmdline", spec.cmdline)
    put(proc / "cpuinfo", f"processor\t: 0\nvendor_id\t: {spec.cpu_vendor}\n")
    put(proc / "sys" / "kernel" / "osrelease", spec.kernel)
    put(
        proc / "version",
        spec.version if spec.kernel in spec.version else f"Linux version {spec.kernel} #1 SMP",
    )
    modules_dir = root / "lib" / "modules" / spec.kernel
    put(modules_dir / "modules.builtin", "\n".join(spec.modules_builtin))
    for name in spec.module_files:
        put(modules_dir / name, "")
    if spec.modules_dep:
        put(modules_dir / "modules.dep", "\n".join(f"{name}:" for name in spec.module_files))
    if spec.kernel_config:
        put(root / "boot" / f"config-{spec.kernel}", "\n".join(spec.kernel_config))
    from passthrough.tools.pcidb import PciIds

    names = PciIds(PCI_IDS).excerpt({(fn.vendor[2:], fn.device[2:]) for fn in spec.functions})
    if names:
        put(
            root / "usr/share/misc/pci.ids",
            names.replace(str(PCI_IDS), "tests/pci.ids").rstrip("\n"),
        )
    write_system(spec.system, root)
    for rel, text in spec.files.items():
        put(root / rel, text)


HOSTS = {
    "demo": demo_host,
    "mixed": mixed_group_host,
    "nvidia4": nvidia_4_function_host,
    **{f"kernel-{v}": (lambda v=v: kernel_host(v)) for v in KERNELS},
}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in HOSTS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(HOSTS)}}} DIR")
    sys.path.insert(0, str(PCI_IDS.parent.parent))  # the passthrough package of this clone
    target = Path(sys.argv[2])
    if target.exists():
        shutil.rmtree(target)
    write_tree(HOSTS[sys.argv[1]](), target)
