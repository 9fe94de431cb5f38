"""What the kernel does when control files outside the PCI bus are written (kernel 6.1).

KernelModel hands every write outside bus/pci/ to SystemFiles, so the dry run predicts
these writes on its overlay and the test suite's fake kernel applies them to its tree,
with the same rules. Behaviour measured in the QEMU guest (tests/guest/test_toolbox_in_guest.py):

- vtconsole `bind`: 0 or 1. Unbinding the last bound console driver hands the consoles to
  the system console driver ("(S) ..."): vgacon ("(S) VGA+") on BIOS/CSM boots, the dummy
  console on UEFI ones; its `bind` turns 1. Writing 0 to a system driver is accepted and
  changes nothing. Binding a driver takes the consoles back from it.
- platform driver `unbind`/`bind` (efi-framebuffer, simpledrm, ...): ENODEV when the device
  is not bound to that driver, or is already bound elsewhere.
- `nr_hugepages`: the kernel allocates what it can and reports success even when it got
  fewer pages; the file then shows how many it has. Pages in use are never taken back.
- cpufreq `scaling_governor`: EINVAL for a governor not in scaling_available_governors.
- cgroup v2 `cpuset.cpus`: a CPU list or empty (inherit); anything else is EINVAL. The file
  exists once the parent's `cgroup.subtree_control` enables cpuset.
  `cgroup.subtree_control`: `+name`/`-name` words; ENOENT for a controller not available.
Any other file takes the value as written (plain sysfs attributes).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from typing import Protocol

from ..cpulist import format_cpu_list, parse_cpu_list

_VTCONSOLE = re.compile(r"^(.*/)vtcon(\d+)/bind$")
_PLATFORM = re.compile(r"^bus/platform/drivers/([^/]+)/(bind|unbind)$")
_HUGEPAGES = re.compile(r"^(.*/hugepages-(\d+)kB)/nr_hugepages$")
_GOVERNOR = re.compile(r"^(.*)/scaling_governor$")
_CPUSET = re.compile(r"^fs/cgroup/(.+/)?cpuset\.cpus$")
_SUBTREE = re.compile(r"^fs/cgroup/(.+/)?cgroup\.subtree_control$")
MAX_CONSOLE_DRIVERS = 16  # the kernel's MAX_NR_CON_DRIVER


class FilesStore(Protocol):
    def read(self, rel: str) -> str | None: ...
    def set_text(self, rel: str, text: str) -> None: ...
    def exists(self, rel: str) -> bool: ...
    def set_link(self, rel: str, target: str | None) -> None: ...


def _invalid() -> OSError:
    return OSError(errno.EINVAL, "Invalid argument")


class SystemFiles:
    def __init__(
        self, store: FilesStore, hugepage_limit: Callable[[int], int | None] = lambda kib: None
    ):
        self.store = store
        # How many pages of a size the kernel can hold at most right now (None: no limit);
        # the fake kernel uses it to give fewer pages than asked, as a fragmented host does.
        self.hugepage_limit = hugepage_limit

    def write(self, rel: str, value: str) -> None:
        text = value.strip()
        for pattern, handler in (
            (_VTCONSOLE, self._vtconsole),
            (_PLATFORM, self._platform),
            (_HUGEPAGES, self._hugepages),
            (_GOVERNOR, self._governor),
            (_CPUSET, self._cpuset),
            (_SUBTREE, self._subtree),
        ):
            match = pattern.match(rel)
            if match:
                return handler(rel, match, text)
        if not self.store.exists(rel):
            raise OSError(errno.ENOENT, "No such file or directory")
        return self.store.set_text(rel, text)

    # --- consoles and framebuffers -------------------------------------------------------------

    def _vtconsole(self, rel: str, match: re.Match, text: str) -> None:
        if text not in ("0", "1"):
            raise _invalid()
        base = match.group(1)
        consoles = [
            n
            for n in range(MAX_CONSOLE_DRIVERS)
            if self.store.read(f"{base}vtcon{n}/bind") is not None
        ]
        # The system driver takes the consoles back: a dummy one registered later (vgacon
        # removed) before vgacon itself.
        system = [
            n for n in consoles if (self.store.read(f"{base}vtcon{n}/name") or "").startswith("(S)")
        ]
        fallback = next(
            (
                n
                for n in reversed(system)
                if "dummy" in (self.store.read(f"{base}vtcon{n}/name") or "")
            ),
            system[0] if system else None,
        )
        this = int(match.group(2))
        bound = [n for n in consoles if self.store.read(f"{base}vtcon{n}/bind") == "1"]
        if text == "1":
            self.store.set_text(rel, "1")
            for n in system:
                if n != this:
                    self.store.set_text(f"{base}vtcon{n}/bind", "0")
            return
        if this not in bound or this in system:
            return  # a system driver stays bound; the kernel says nothing
        if bound == [this]:
            if fallback is None:
                return  # the last console stays bound; the kernel says nothing
            self.store.set_text(f"{base}vtcon{fallback}/bind", "1")
        self.store.set_text(rel, "0")

    def _platform(self, rel: str, match: re.Match, device: str) -> None:
        driver, verb = match.groups()
        link = f"bus/platform/drivers/{driver}/{device}"
        device_rel = f"bus/platform/devices/{device}"
        if verb == "unbind":
            if not self.store.exists(link):
                raise OSError(errno.ENODEV, "No such device")
            self.store.set_link(link, None)
            self.store.set_link(f"{device_rel}/driver", None)
            return
        if not self.store.exists(device_rel) or self.store.exists(f"{device_rel}/driver"):
            raise OSError(errno.ENODEV, "No such device")
        self.store.set_link(link, device_rel)
        self.store.set_link(f"{device_rel}/driver", f"bus/platform/drivers/{driver}")

    # --- memory and CPUs ---------------------------------------------------------------------

    def _hugepages(self, rel: str, match: re.Match, text: str) -> None:
        if not text.isdigit():
            raise _invalid()
        pool, kib = match.group(1), int(match.group(2))
        total = int(self.store.read(rel) or "0")
        free = int(self.store.read(f"{pool}/free_hugepages") or "0")
        in_use = total - free
        wanted = int(text)
        limit = self.hugepage_limit(kib)
        if wanted > total and limit is not None:
            wanted = max(total, min(wanted, limit))  # success is reported either way
        wanted = max(wanted, in_use)
        self.store.set_text(rel, str(wanted))
        self.store.set_text(f"{pool}/free_hugepages", str(wanted - in_use))

    def _governor(self, rel: str, match: re.Match, text: str) -> None:
        available = (self.store.read(f"{match.group(1)}/scaling_available_governors") or "").split()
        if text not in available:
            raise _invalid()
        self.store.set_text(rel, text)

    def _cpuset(self, rel: str, match: re.Match, text: str) -> None:
        try:
            cpus = parse_cpu_list(text)
        except ValueError:
            raise _invalid() from None
        group = rel.rsplit("/", 1)[0]
        parent = group.rsplit("/", 1)[0]
        # The file is there when the parent enables cpuset for its children.
        enabled = "cpuset" in (self.store.read(f"{parent}/cgroup.subtree_control") or "").split()
        if not self.store.exists(rel) and not (
            enabled and self.store.exists(f"{group}/cgroup.controllers")
        ):
            raise OSError(errno.ENOENT, "No such file or directory")
        self.store.set_text(rel, format_cpu_list(cpus))

    def _subtree(self, rel: str, match: re.Match, text: str) -> None:
        directory = "fs/cgroup/" + (match.group(1) or "")
        available = (self.store.read(f"{directory}cgroup.controllers") or "").split()
        enabled = (self.store.read(rel) or "").split()
        for word in text.split():
            name = word[1:]
            if word[:1] not in "+-" or not name:
                raise _invalid()
            if name not in available:
                raise OSError(errno.ENOENT, "No such file or directory")
            if word[0] == "+" and name not in enabled:
                enabled.append(name)
            elif word[0] == "-" and name in enabled:
                enabled.remove(name)
        self.store.set_text(rel, " ".join(enabled))
