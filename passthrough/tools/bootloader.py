"""Which boot loader a host uses, read from its tree (--root), and how to add a kernel
parameter with it: the advice `iommu` and `check` give when the IOMMU is off.

Looked for in this order: Proxmox's proxmox-boot-tool (it manages the ESPs itself, with
GRUB or systemd-boot), Pop!_OS's kernelstub, systemd-boot (/etc/kernel/cmdline, a
loader.conf on the ESP), then GRUB (/etc/default/grub) with the distribution's command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Where distributions mount the ESP that holds systemd-boot's loader.conf.
LOADER_CONFS = ("boot/efi/loader/loader.conf", "boot/loader/loader.conf", "efi/loader/loader.conf")


@dataclass(frozen=True)
class BootLoader:
    name: str  # proxmox-boot-tool, kernelstub, systemd-boot, grub, unknown
    how: str  # "{params}" stands for the parameters to add

    def advice(self, params: str) -> str:
        return self.how.replace("{params}", params)


def os_release(root: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, equals, value = line.partition("=")
            if equals:
                values[key.strip()] = value.strip().strip("\"'")
        break
    return values


def _distro_ids(root: Path) -> set[str]:
    release = os_release(root)
    return {release.get("ID", ""), *release.get("ID_LIKE", "").split()} - {""}


def _exists(root: Path, *rels: str) -> bool:
    return any((root / rel).exists() for rel in rels)


def detect(root: Path) -> BootLoader:
    ids = _distro_ids(root)
    if _exists(root, "etc/kernel/proxmox-boot-uuids", "usr/sbin/proxmox-boot-tool"):
        uses_cmdline = _exists(root, "etc/kernel/cmdline")
        where = (
            "append `{params}` to the single line in /etc/kernel/cmdline"
            if uses_cmdline
            else "append `{params}` to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub"
        )
        return BootLoader(
            "proxmox-boot-tool", f"{where}, run `proxmox-boot-tool refresh`, and reboot"
        )
    if "pop" in ids or _exists(root, "usr/bin/kernelstub", "etc/kernelstub/configuration"):
        return BootLoader("kernelstub", 'run `kernelstub -a "{params}"` and reboot')
    if _exists(root, "etc/kernel/cmdline", *LOADER_CONFS):
        return BootLoader(
            "systemd-boot",
            "append `{params}` to the single line in /etc/kernel/cmdline (create it from "
            "/proc/cmdline without BOOT_IMAGE= if missing), reinstall the kernel's boot entry "
            "(`kernel-install add $(uname -r) /lib/modules/$(uname -r)/vmlinuz`; on Arch, add "
            "it to the options line in /boot/loader/entries/*.conf), and reboot",
        )
    if _exists(root, "etc/default/grub"):
        edit = "append `{params}` to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, "
        if ids & {"debian", "ubuntu"}:
            return BootLoader("grub", edit + "run `update-grub`, and reboot")
        if ids & {"fedora", "rhel", "centos"}:
            return BootLoader(
                "grub",
                'run `grubby --update-kernel=ALL --args="{params}"` (it updates every boot '
                "entry; /etc/default/grub is for new kernels: add it there too), and reboot",
            )
        if ids & {"opensuse", "suse", "sles"}:
            return BootLoader(
                "grub", edit + "run `grub2-mkconfig -o /boot/grub2/grub.cfg`, and reboot"
            )
        if _exists(root, "boot/grub2/grub.cfg"):
            return BootLoader(
                "grub", edit + "run `grub2-mkconfig -o /boot/grub2/grub.cfg`, and reboot"
            )
        return BootLoader("grub", edit + "run `grub-mkconfig -o /boot/grub/grub.cfg`, and reboot")
    return BootLoader(
        "unknown",
        "add `{params}` to the kernel command line in your boot loader's configuration "
        "(no GRUB, systemd-boot or Proxmox boot tool found in this tree), and reboot",
    )
