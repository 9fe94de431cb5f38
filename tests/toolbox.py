"""What the toolbox actions' tests compare: the system state a toolbox action may change (the
runs go through runs.hook)."""

from __future__ import annotations

import os
from pathlib import Path


def read(path: str) -> str | None:
    try:
        return Path("/host", path.lstrip("/")).read_text().strip()
    except OSError:
        return None


def system_state(kernel) -> dict:
    """Everything a toolbox action may change, with the PCI state of kernel.snapshot()."""
    sys_dir = Path("/host/sys")
    state: dict = {"pci": kernel.snapshot()}
    for console in (
        sorted(os.listdir(sys_dir / "class/vtconsole"))
        if (sys_dir / "class/vtconsole").exists()
        else []
    ):
        state[console] = read(f"sys/class/vtconsole/{console}/bind")
    drivers = sys_dir / "bus/platform/drivers"
    state["platform"] = sorted(
        f"{d}/{e}"
        for d in (os.listdir(drivers) if drivers.exists() else [])
        for e in os.listdir(drivers / d)
        if "framebuffer." in e
    )
    cpufreq = sys_dir / "devices/system/cpu/cpufreq"
    state["governors"] = (
        [
            read(f"sys/devices/system/cpu/cpufreq/{p}/scaling_governor")
            for p in sorted(os.listdir(cpufreq))
        ]
        if cpufreq.exists()
        else []
    )
    hugepages = sys_dir / "kernel/mm/hugepages"
    state["hugepages"] = (
        {
            p: read(f"sys/kernel/mm/hugepages/{p}/nr_hugepages")
            for p in sorted(os.listdir(hugepages))
        }
        if hugepages.exists()
        else {}
    )
    cgroup = sys_dir / "fs/cgroup"
    state["cgroups"] = (
        {
            g: read(f"sys/fs/cgroup/{g}/cpuset.cpus")
            for g in sorted(os.listdir(cgroup))
            if (cgroup / g).is_dir()
        }
        if cgroup.exists()
        else {}
    )
    state["subtree_control"] = read("sys/fs/cgroup/cgroup.subtree_control")
    state["pids"] = sorted(int(p) for p in os.listdir("/host/proc") if p.isdigit())
    return state
