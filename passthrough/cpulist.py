"""CPU lists as the kernel writes them (`0-3,8-11`): parsing and formatting.

The same syntax is used by /sys/devices/system/cpu/online, cgroup v2 cpuset.cpus and
systemd's AllowedCPUs=, so profiles use it too.
"""

from __future__ import annotations

MAX_CPU = 8191  # the kernel's NR_CPUS ceiling; a larger number is a typo


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,8-11' -> [0, 1, 2, 3, 8, 9, 10, 11]; raises ValueError saying what is wrong.

    An empty text is the empty list (an unset cpuset.cpus reads as an empty line).
    """
    cpus: set[int] = set()
    stripped = text.strip()
    if not stripped:
        return []
    for part in stripped.split(","):
        bounds = cpu_range(part.strip())
        if bounds is None:
            raise ValueError(
                f"{part.strip()!r} is not a CPU number or range; expected e.g. 0-3,8-11"
            )
        first, last = bounds
        if last < first:
            raise ValueError(f"{part.strip()!r} is a backwards range; write the lower CPU first")
        if last > MAX_CPU:
            raise ValueError(f"CPU {last} is beyond the kernel's limit of {MAX_CPU}")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def cpu_range(part: str) -> tuple[int, int] | None:
    """'8-11' -> (8, 11), '5' -> (5, 5); None for anything else (a string test, not a
    pattern: the hook reads the online CPUs on every governor or cpus step)."""
    first, dash, last = part.partition("-")
    if not first.isdecimal() or (dash and not last.isdecimal()):
        return None
    return int(first), int(last) if dash else int(first)


def format_cpu_list(cpus: list[int] | set[int]) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8' (the kernel's own form)."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)
