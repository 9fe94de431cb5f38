"""Desktop hosts as users bring them (../shared/notes/real-hosts.md), for the single-GPU
tests: a desktop on the GPU that goes to the VM, or on another one.

- single-amd: the only GPU, an RX 6800 XT; GNOME on Xorg under gdm; wireplumber and
  pipewire on its HDMI audio.
- single-nvidia: the only GPU, an RTX 3070 on the proprietary driver; GNOME on Wayland under
  gdm3 (gnome-shell and Xwayland as the user unit org.gnome.Shell@wayland.service);
  nvidia-persistenced holds /dev/nvidia*.
- kde-wayland: the only GPU, an RX 7900 XT; KDE Plasma on Wayland under sddm, kwin_wayland
  and plasmashell run as plasma-* user units.
- dual-gpu: the console and desktop are on an NVIDIA GTX 1050; a Vega 64 (the AMD reset
  bug, reset only by bus) waits for the VM, held by nothing.
- laptop: the desktop on the Intel iGPU; the NVIDIA dGPU on the proprietary driver, held
  only by nvidia-persistenced.

Each comes with the domain XML a user would have for it (DOMAIN_XML).
"""

from __future__ import annotations

from dataclasses import fields

from hosts import Bar, Function, HostSpec, _bridge
from system_facts import Process, System

MiB = 1 << 20
GiB = 1 << 30
USER = "/user.slice/user-1000.slice"
UNITS = f"{USER}/user@1000.service"
CONSOLES = (("(S) dummy device", False), ("(M) frame buffer device", True))


# Which NVIDIA module uses which (/proc/modules shows them as used-by), where the host
# model has module dependencies (issue 11 part 4).
NVIDIA_DEPS = {
    "nvidia_drm": ("nvidia_modeset",),
    "nvidia_modeset": ("nvidia",),
    "nvidia_uvm": ("nvidia",),
}


def _module_deps(deps: dict[str, tuple[str, ...]]) -> dict:
    return {"module_deps": deps} if "module_deps" in {f.name for f in fields(HostSpec)} else {}


def _user(pid: int) -> Process:
    return Process(pid, "systemd", uid=1000, cgroup=f"{UNITS}/init.scope")


def _audio_daemons(pid: int, nodes: tuple[str, ...]) -> tuple[Process, ...]:
    files = {20 + n: f"/dev/snd/{node}" for n, node in enumerate(nodes)}
    return (
        Process(pid, "pipewire", uid=1000, cgroup=f"{UNITS}/session.slice/pipewire.service"),
        Process(
            pid + 1,
            "wireplumber",
            uid=1000,
            cgroup=f"{UNITS}/session.slice/wireplumber.service",
            fds=files,
        ),
    )


def _platform(
    *extra: Function, modules: list[str], drivers: list[str], cpu: str = "AuthenticAMD"
) -> dict:
    """An NVMe disk and a NIC in groups of their own, as every host has them."""
    functions = [
        Function(
            "0000:02:00.0",
            "0x144d",
            "0xa80a",
            "0x010802",
            "nvme",
            20,
            bars={0: Bar(16 * 1024, 0xFCF00000, flags=0x00140204)},
            reset_method="flr bus",
        ),
        Function(
            "0000:05:00.0",
            "0x8086",
            "0x15f3",
            "0x020000",
            "igc",
            21,
            bars={0: Bar(1 * MiB, 0xFCA00000, flags=0x00040200)},
            reset_method="flr bus",
        ),
        *extra,
    ]
    return dict(
        functions=functions,
        modules=[*modules, "nvme", "igc", "kvm"],
        drivers=[*drivers, "nvme", "igc", "pcieport"],
        cpu_vendor=cpu,
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-13-amd64 root=UUID=1c1b9c1e ro quiet "
        + ("amd_iommu=on iommu=pt" if cpu == "AuthenticAMD" else "intel_iommu=on iommu=pt"),
    )


def _amd_card(
    device: str, audio: str, boot_vga: bool, description: str, reset: str = "bus"
) -> list[Function]:
    return [
        _bridge("0000:00:03.1", 14),
        Function(
            "0000:03:00.0",
            "0x1002",
            device,
            "0x030000",
            "amdgpu",
            14,
            "0000:00:03.1",
            {
                0: Bar(16 * GiB, 0x7C00000000, resizable=tuple(1 << n for n in range(8, 15))),
                2: Bar(256 * MiB, 0x7800000000, resizable=tuple(1 << n for n in range(1, 9))),
            },
            reset_method=reset,
            boot_vga=boot_vga,
            description=description,
        ),
        Function(
            "0000:03:00.1",
            "0x1002",
            audio,
            "0x040300",
            "snd_hda_intel",
            14,
            "0000:00:03.1",
            {0: Bar(16 * 1024, 0xFCB20000, flags=0x00040200)},
            reset_method=reset,
        ),
    ]


def _nvidia_card(
    address: str, device: str, audio: str, boot_vga: bool, group: int, bridge: str
) -> list[Function]:
    slot = address.rsplit(".", 1)[0]
    return [
        Function(
            address,
            "0x10de",
            device,
            "0x030000",
            "nvidia",
            group,
            bridge,
            {
                0: Bar(16 * MiB, 0xFB000000, flags=0x00040200),
                1: Bar(256 * MiB, 0x7FE0000000),
                3: Bar(32 * MiB, 0x7FF0000000),
            },
            reset_method="flr bus",
            boot_vga=boot_vga,
        ),
        Function(
            f"{slot}.1",
            "0x10de",
            audio,
            "0x040300",
            "snd_hda_intel",
            group,
            bridge,
            {0: Bar(16 * 1024, 0xFC080000, flags=0x00040200)},
            reset_method="flr bus",
        ),
    ]


def single_amd() -> HostSpec:
    session = f"{USER}/session-2.scope"
    return HostSpec(
        **_platform(
            *_amd_card("0x73bf", "0xab28", True, "AMD Radeon RX 6800 XT (Navi 21)"),
            modules=["amdgpu", "snd_hda_intel"],
            drivers=["amdgpu", "snd_hda_intel"],
        ),
        system=System(
            vtconsoles=CONSOLES,
            framebuffers=(("efi-framebuffer.0", None),),  # amdgpu took over from efifb
            systemd=True,
            display_manager="gdm.service",
            processes=(
                Process(1, "systemd", cgroup="/init.scope"),
                Process(900, "gdm", cgroup="/system.slice/gdm.service"),
                Process(1380, "gdm-session-wor", cgroup=session),
                Process(1390, "gdm-x-session", uid=1000, cgroup=session),
                Process(1400, "Xorg", uid=1000, cgroup=session, fds={12: "/dev/dri/card0"}),
                Process(
                    1450, "gnome-shell", uid=1000, cgroup=session, fds={15: "/dev/dri/renderD128"}
                ),
                _user(1300),
                *_audio_daemons(1500, ("controlC0", "pcmC0D3p")),
            ),
            drm={"0000:03:00.0": ("card0", "renderD128")},
            sound={"0000:03:00.1": (0, ("controlC0", "pcmC0D3p"))},
        ),
    )


def single_nvidia() -> HostSpec:
    session = f"{USER}/session-2.scope"
    shell = f"{UNITS}/session.slice/org.gnome.Shell@wayland.service"
    nvidia = {30: "/dev/nvidiactl", 31: "/dev/nvidia0", 32: "/dev/nvidia-modeset"}
    return HostSpec(
        **_module_deps(NVIDIA_DEPS),
        **_platform(
            _bridge("0000:00:01.0", 2),
            *_nvidia_card("0000:01:00.0", "0x2484", "0x228b", True, 2, "0000:00:01.0"),
            modules=["nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia", "snd_hda_intel"],
            drivers=["nvidia", "snd_hda_intel"],
            cpu="GenuineIntel",
        ),
        system=System(
            vtconsoles=CONSOLES,
            framebuffers=(("efi-framebuffer.0", "efi-framebuffer"),),
            systemd=True,
            display_manager="gdm3.service",
            processes=(
                Process(1, "systemd", cgroup="/init.scope"),
                Process(
                    700,
                    "nvidia-persiste",
                    cgroup="/system.slice/nvidia-persistenced.service",
                    fds={3: "/dev/nvidiactl", 4: "/dev/nvidia0"},
                ),
                Process(880, "gdm3", cgroup="/system.slice/gdm3.service"),
                Process(1350, "gdm-session-wor", cgroup=session),
                Process(1360, "gdm-wayland-ses", uid=1000, cgroup=session),
                Process(1370, "gnome-session-b", uid=1000, cgroup=session),
                _user(1300),
                Process(
                    1400,
                    "gnome-shell",
                    uid=1000,
                    cgroup=shell,
                    fds={12: "/dev/dri/card0", **nvidia},
                ),
                Process(1410, "Xwayland", uid=1000, cgroup=shell, fds={9: "/dev/dri/renderD128"}),
                *_audio_daemons(1500, ("controlC0",)),
            ),
            drm={"0000:01:00.0": ("card0", "renderD128")},
            sound={"0000:01:00.1": (0, ("controlC0", "pcmC0D3p"))},
        ),
    )


def kde_wayland() -> HostSpec:
    session = f"{USER}/session-3.scope"
    return HostSpec(
        **_platform(
            *_amd_card("0x744c", "0xab30", True, "AMD Radeon RX 7900 XT (Navi 31)"),
            modules=["amdgpu", "snd_hda_intel"],
            drivers=["amdgpu", "snd_hda_intel"],
        ),
        system=System(
            vtconsoles=CONSOLES,
            framebuffers=(),
            systemd=True,
            display_manager="sddm.service",
            processes=(
                Process(1, "systemd", cgroup="/init.scope"),
                Process(850, "sddm", cgroup="/system.slice/sddm.service"),
                Process(1200, "sddm-helper", cgroup=session),
                Process(1250, "startplasma-way", uid=1000, cgroup=session),
                _user(1100),
                Process(
                    1290,
                    "kwin_wayland_wr",
                    uid=1000,
                    cgroup=f"{UNITS}/session.slice/plasma-kwin_wayland.service",
                ),
                Process(
                    1300,
                    "kwin_wayland",
                    uid=1000,
                    cgroup=f"{UNITS}/session.slice/plasma-kwin_wayland.service",
                    fds={14: "/dev/dri/card0"},
                ),
                Process(
                    1320,
                    "Xwayland",
                    uid=1000,
                    cgroup=f"{UNITS}/session.slice/plasma-kwin_wayland.service",
                    fds={10: "/dev/dri/renderD128"},
                ),
                Process(
                    1350,
                    "plasmashell",
                    uid=1000,
                    cgroup=f"{UNITS}/session.slice/plasma-plasmashell.service",
                    fds={18: "/dev/dri/renderD128"},
                ),
                *_audio_daemons(1500, ("controlC0",)),
            ),
            drm={"0000:03:00.0": ("card0", "renderD128")},
            sound={"0000:03:00.1": (0, ("controlC0", "pcmC0D3p"))},
        ),
    )


def dual_gpu() -> HostSpec:
    """The console and GNOME on Xorg on a GTX 1050 (boot VGA); a Vega 64 for the VM, whose
    only reset is a bus reset (the AMD reset bug)."""
    session = f"{USER}/session-2.scope"
    nvidia = {30: "/dev/nvidiactl", 31: "/dev/nvidia0"}
    return HostSpec(
        **_module_deps(NVIDIA_DEPS),
        **_platform(
            *_amd_card("0x687f", "0xaaf8", False, "AMD Radeon RX Vega 64 (Vega 10)"),
            _bridge("0000:00:01.1", 1),
            *_nvidia_card("0000:09:00.0", "0x1c81", "0x0fb9", True, 1, "0000:00:01.1"),
            modules=["amdgpu", "nvidia_drm", "nvidia_modeset", "nvidia", "snd_hda_intel"],
            drivers=["amdgpu", "nvidia", "snd_hda_intel"],
        ),
        system=System(
            vtconsoles=CONSOLES,
            framebuffers=(("efi-framebuffer.0", "efi-framebuffer"),),
            systemd=True,
            display_manager="gdm.service",
            processes=(
                Process(1, "systemd", cgroup="/init.scope"),
                Process(900, "gdm", cgroup="/system.slice/gdm.service"),
                Process(1380, "gdm-session-wor", cgroup=session),
                Process(
                    1400, "Xorg", uid=1000, cgroup=session, fds={12: "/dev/dri/card0", **nvidia}
                ),
                Process(1450, "gnome-shell", uid=1000, cgroup=session, fds=nvidia),
                _user(1300),
                *_audio_daemons(1500, ("controlC0",)),
            ),
            drm={"0000:09:00.0": ("card0", "renderD128"), "0000:03:00.0": ("card1", "renderD129")},
            sound={
                "0000:09:00.1": (0, ("controlC0", "pcmC0D3p")),
                "0000:03:00.1": (1, ("controlC1", "pcmC1D3p")),
            },
        ),
    )


def laptop() -> HostSpec:
    """An Intel laptop: GNOME on Wayland on the iGPU (boot VGA), an RTX 3060 Laptop GPU on the
    proprietary driver with its HDMI audio; nvidia-persistenced holds it, nothing else."""
    session = f"{USER}/session-2.scope"
    igpu = Function(
        "0000:00:02.0",
        "0x8086",
        "0x9a49",
        "0x030000",
        "i915",
        0,
        bars={0: Bar(16 * MiB, 0x6000000000, flags=0x00140204)},
        reset_method="flr",
        boot_vga=True,
    )
    return HostSpec(
        **_module_deps(NVIDIA_DEPS),
        **_platform(
            igpu,
            _bridge("0000:00:01.0", 2),
            *_nvidia_card("0000:01:00.0", "0x2560", "0x228e", False, 2, "0000:00:01.0"),
            modules=["i915", "nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia"]
            + ["snd_hda_intel"],
            drivers=["i915", "nvidia", "snd_hda_intel"],
            cpu="GenuineIntel",
        ),
        system=System(
            vtconsoles=CONSOLES,
            framebuffers=(),
            systemd=True,
            display_manager="gdm3.service",
            processes=(
                Process(1, "systemd", cgroup="/init.scope"),
                Process(
                    700,
                    "nvidia-persiste",
                    cgroup="/system.slice/nvidia-persistenced.service",
                    fds={3: "/dev/nvidiactl", 4: "/dev/nvidia0"},
                ),
                Process(880, "gdm3", cgroup="/system.slice/gdm3.service"),
                Process(1360, "gdm-wayland-ses", uid=1000, cgroup=session),
                Process(1400, "gnome-shell", uid=1000, cgroup=session, fds={12: "/dev/dri/card0"}),
                Process(1410, "Xwayland", uid=1000, cgroup=session),
                _user(1300),
                *_audio_daemons(1500, ("controlC0",)),
            ),
            drm={"0000:00:02.0": ("card0", "renderD128"), "0000:01:00.0": ("card1", "renderD129")},
            sound={"0000:01:00.1": (1, ("controlC1", "pcmC1D3p"))},
        ),
    )


def _domain(name: str, os_id: str, *addresses: str, managed: str = "yes") -> str:
    hostdevs = "".join(
        f"    <hostdev mode='subsystem' type='pci' managed='{managed}'>\n"
        f"      <source><address domain='0x0000' bus='0x{a[5:7]}' slot='0x{a[8:10]}' "
        f"function='0x{a[11]}'/></source>\n    </hostdev>\n"
        for a in addresses
    )
    return (
        f"<domain type='kvm'>\n  <name>{name}</name>\n  <metadata>\n"
        f"    <libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>\n"
        f"      <libosinfo:os id='{os_id}'/>\n    </libosinfo:libosinfo>\n  </metadata>\n"
        f"  <features><acpi/><hyperv mode='custom'><vendor_id state='on' value='0123456789ab'/>"
        f"</hyperv><kvm><hidden state='on'/></kvm></features>\n"
        f"  <os><type arch='x86_64' machine='q35'>hvm</type></os>\n"
        f"  <devices>\n{hostdevs}  </devices>\n</domain>\n"
    )


WIN11 = "http://microsoft.com/win/11"
DESKTOP_HOSTS = {
    "single-amd": single_amd,
    "single-nvidia": single_nvidia,
    "kde-wayland": kde_wayland,
    "dual-gpu": dual_gpu,
    "laptop": laptop,
}
# The domain each host passes its GPU to (the GPU and its audio, as virt-manager adds them).
DOMAIN_XML = {
    "single-amd": _domain("win11", WIN11, "0000:03:00.0", "0000:03:00.1"),
    "single-nvidia": _domain("win11", WIN11, "0000:01:00.0", "0000:01:00.1"),
    "kde-wayland": _domain("win11", WIN11, "0000:03:00.0", "0000:03:00.1"),
    "dual-gpu": _domain("win11", WIN11, "0000:03:00.0", "0000:03:00.1"),
    "laptop": _domain("win11", WIN11, "0000:01:00.0", "0000:01:00.1"),
}
