"""Time `virsh start` / `virsh destroy` cycles: what a hook costs the user, as virsh shows it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from daemon import Libvirtd


@dataclass(frozen=True)
class Cycle:
    start: float  # seconds `virsh start` took, hook calls included
    destroy: float  # seconds `virsh destroy` took, hook calls included


def time_cycles(libvirtd: Libvirtd, domain: str, count: int) -> list[Cycle]:
    """Start and destroy the shut-off `domain` `count` times; each virsh command is timed whole
    (process spawn included, the same with and without a hook, so ratios stay fair)."""
    return [
        Cycle(start=_timed(libvirtd, "start", domain), destroy=_timed(libvirtd, "destroy", domain))
        for _ in range(count)
    ]


def _timed(libvirtd: Libvirtd, *virsh_args: str) -> float:
    started = time.perf_counter()
    libvirtd.virsh(*virsh_args)
    return time.perf_counter() - started
