"""Running a profile of toolbox actions on the fake kernel, and what the tests compare."""

from __future__ import annotations

import io
import os
from pathlib import Path

from passthrough.cli import main

PROFILES = Path("/profiles")
STATE = "/host/run/passthrough-hook"
LOG = "/host/log/hook.log"


def write_profile(text: str, domain: str = "win10") -> Path:
    PROFILES.mkdir(parents=True, exist_ok=True)
    (PROFILES / f"{domain}.yaml").write_text(text)
    return PROFILES


def run(
    kernel,
    profile: str | None,
    *event: str,
    dry_run: bool = False,
    xml: str = "<domain/>",
    domain: str = "win10",
) -> tuple[int, str, str]:
    """main() as libvirt calls the hook, on the fake kernel at /host (a dry run reads the same
    tree through the dry-run host). Returns (exit code, stdout, stderr)."""
    if profile is not None:
        write_profile(profile, domain)
    if dry_run:  # a dry run reads journals from a state dir that exists (a real run makes it)
        Path(STATE).mkdir(parents=True, exist_ok=True)
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            *(["--dry-run"] if dry_run else []),
            "--debug",  # the tests read each step's operations from the log
            "--root",
            "/host",
            "--config-dir",
            str(PROFILES),
            "--state-dir",
            STATE,
            "--log-file",
            LOG,
            "--xml",
            "-",  # the XML on stdin, as libvirt gives it
            domain,
            *event,
            "-",
        ],
        stdin=io.StringIO(xml),
        host_factory=None if dry_run else kernel.host,
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


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
