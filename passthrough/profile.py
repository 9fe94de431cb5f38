"""Load and validate a profile: `<config-dir>/<domain>.yaml`.

The whole file is checked before anything runs. Every problem is reported as
`FILE:LINE:COL: message`, from the positions PyYAML keeps on composed nodes.
Anchors and aliases are refused (an alias bomb expands a few lines into gigabytes),
and so are files over MAX_BYTES or nested deeper than MAX_DEPTH.
"""

from __future__ import annotations

import os

from .errors import ProfileError, UsageError
from .record import record
from .schema import Bool, Context, Invalid, PciAddress, Seconds, closest, kind_of, mapping_items

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .actions.base import Action

MAX_BYTES = 256 * 1024
MAX_DEPTH = 16
# `log_level:` in a profile: what the hook logs for that domain (libvirt passes the hook no
# environment and no options, so the profile is where a user asks for more).
LOG_LEVELS = ("info", "debug")

# The events libvirt's qemu driver calls the hook with, as "<operation>/<sub-operation>".
EVENTS = (
    "prepare/begin",
    "start/begin",
    "started/begin",
    "stopped/end",
    "release/end",
    "migrate/begin",
    "restore/begin",
    "reconnect/begin",
    "attach/begin",
)
# Step keys that any action accepts next to its own.
STEP_OPTIONS = {"timeout": Seconds(), "force": Bool()}


@record(frozen=True)
class Where:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@record(frozen=True)
class Step:
    event: str
    number: int  # 1-based position within its event
    action: Action
    where: Where
    timeout: float | None = None
    force: bool = False


@record(frozen=True)
class Profile:
    path: str
    devices: dict[str, str]  # name -> PCI address, in file order
    events: dict[str, tuple[Step, ...]]
    log_level: str = "info"  # "debug" also logs every operation of each step

    def name_of(self, address: str) -> str | None:
        for name, addr in self.devices.items():
            if addr == address:
                return name
        return None


def is_plain_name(domain: str) -> bool:
    """A domain name that is safe to use as a file name: no path, no dot files, no control chars."""
    return (
        0 < len(domain) <= 200
        and "/" not in domain
        and not domain.startswith(".")
        and not any(ord(ch) < 32 or ch == "\x7f" for ch in domain)
    )


def find_profile(config_dir: str | os.PathLike, domain: str) -> str | None:
    """The profile file of a domain, or None. Raises UsageError for names that are not plain."""
    if not is_plain_name(domain):
        raise UsageError(
            f"{domain!r} is not a plain domain name (no '/', no leading '.', no control characters)"
        )
    for suffix in (".yaml", ".yml"):
        candidate = os.path.join(config_dir, domain + suffix)
        if os.path.isfile(candidate):
            return candidate
    return None


def check_trusted(path: str) -> None:
    """As root, a profile decides what root writes to the kernel: refuse one (or its
    directory) that trust.untrusted rejects. Not root, the hook can do nothing root could
    not, so nothing is refused."""
    from .trust import profile_problems

    if os.geteuid() != 0:
        return
    for problem, fix in profile_problems(path):
        raise UsageError(f"{problem} ({fix})")


def load_profile(path: str | os.PathLike, display: str | None = None) -> Profile:
    """Read, parse and validate a profile file. Raises ProfileError listing every problem."""
    shown = display or str(path)
    return parse_profile(read_profile(path, shown)[0], shown)


def read_profile(path: str | os.PathLike, shown: str) -> tuple[bytes, os.stat_result]:
    """The bytes of a profile file, and its stat taken after reading them."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
            info = os.fstat(handle.fileno())
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read the profile: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ProfileError(
            [f"{shown}:1:1: the profile is larger than {MAX_BYTES // 1024} KiB; profiles are short"]
        )
    return data, info


def parse_profile(data: bytes, shown: str) -> Profile:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ProfileError(
            [f"{shown}:{line}:1: the profile is not UTF-8 text (byte {exc.start})"]
        ) from None
    root = _compose(text, shown)
    problems: list[str] = []

    def report(node: Any, message: str) -> None:
        mark = node.start_mark
        problems.append(f"{shown}:{mark.line + 1}:{mark.column + 1}: {message}")

    if root is None:
        raise ProfileError(
            [
                f"{shown}:1:1: the profile is empty; expected `devices:` and steps such as `prepare/begin:`"
            ]
        )
    try:
        items = mapping_items(root, "the profile")
    except Invalid as exc:
        raise ProfileError(
            [f"{shown}:{exc.node.start_mark.line + 1}:{exc.node.start_mark.column + 1}: {exc}"]
        ) from None

    devices: dict[str, str] = {}
    log_level = "info"
    event_nodes = []
    for key, key_node, value_node in items:
        if key == "devices":
            devices = _devices(value_node, report)
        elif key == "log_level":
            value = getattr(value_node, "value", None)
            if isinstance(value, str) and value in LOG_LEVELS:
                log_level = value
            else:
                report(value_node, f"log_level is {' or '.join(LOG_LEVELS)}")
        elif key in EVENTS:
            event_nodes.append((key, value_node))
        else:
            hint = closest(key, ("devices", "log_level") + EVENTS)
            report(
                key_node,
                f'unknown key "{key}"{hint}; expected `devices:`, `log_level:` or an event '
                "such as prepare/begin",
            )

    ctx = Context(devices=devices, events=EVENTS)
    events = {}
    for event, node in event_nodes:
        events[event] = tuple(_steps(event, node, ctx, shown, report))
    if problems:
        raise ProfileError(problems)
    return Profile(path=shown, devices=devices, events=events, log_level=log_level)


def _compose(text: str, shown: str) -> Any:
    """Compose the YAML document into nodes, refusing aliases and deep nesting first."""
    import yaml

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader_class):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ProfileError(
                    [
                        f"{shown}:{_position(event)}: anchors and aliases (&x, *x) "
                        f"are not allowed in profiles; write the value out"
                    ]
                )
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ProfileError(
                        [
                            f"{shown}:{_position(event)}: nested deeper than "
                            f"{MAX_DEPTH} levels; profiles are flat lists of steps"
                        ]
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.compose(text, Loader=loader_class)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else f"{shown}:1:1"
        what = exc.problem or exc.context or "invalid YAML"
        raise ProfileError([f"{where}: invalid YAML: {what}"]) from None
    except yaml.YAMLError as exc:
        raise ProfileError([f"{shown}:1:1: invalid YAML: {exc}"]) from None


def _position(event: Any) -> str:
    """line:column (from 1) where a YAML event starts; 1:1 when the parser gave no mark."""
    mark = event.start_mark
    return f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "1:1"


def _devices(node: Any, report: Callable[[Any, str], None]) -> dict[str, str]:
    import re

    devices: dict[str, str] = {}
    try:
        items = mapping_items(node, "devices")
    except Invalid as exc:
        report(exc.node, f'{exc}; write `name: "0000:03:00.0"` lines')
        return devices
    used: dict[str, str] = {}
    for name, key_node, value_node in items:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name):
            report(
                key_node,
                f'"{name}" is not a device name; use letters, digits, "-", "_" and "." (e.g. gpu-audio)',
            )
            continue
        try:
            address = PciAddress().check(value_node, Context({}, EVENTS))
        except Invalid as exc:
            report(exc.node, str(exc))
            continue
        if address in used:
            report(value_node, f'{address} is already named "{used[address]}"; one name per device')
            continue
        used[address] = name
        devices[name] = address
    return devices


def _steps(
    event: str, node: Any, ctx: Context, shown: str, report: Callable[[Any, str], None]
) -> list[Step]:
    import yaml

    from .actions import REGISTRY

    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return []  # `release/end:` with nothing: do nothing on that event
    if not isinstance(node, yaml.SequenceNode):
        report(
            node, f"{event} must be a list of steps (lines starting with '- '), got {kind_of(node)}"
        )
        return []
    steps = []
    for number, step_node in enumerate(node.value, start=1):
        try:
            items = mapping_items(step_node, f"step {number} of {event}")
        except Invalid as exc:
            report(exc.node, f"{exc}; a step looks like `- detach: [gpu]`")
            continue
        actions = [(k, kn, vn) for k, kn, vn in items if k in REGISTRY]
        options = {k: (kn, vn) for k, kn, vn in items if k in STEP_OPTIONS}
        others = [(k, kn) for k, kn, _ in items if k not in REGISTRY and k not in STEP_OPTIONS]
        if others:
            for key, key_node in others:
                report(key_node, _unknown_step_key(key, actions))
            continue
        if len(actions) != 1:
            if not actions:
                report(
                    step_node,
                    f"step {number} of {event} has no action; expected one of {', '.join(REGISTRY)}",
                )
            else:
                names = ", ".join(k for k, _, _ in actions)
                report(
                    actions[1][1],
                    f"step {number} of {event} names several actions ({names}); "
                    f"write one action per step (`- ` before each)",
                )
            continue
        name, key_node, value_node = actions[0]
        action_class = REGISTRY[name]
        try:
            values = action_class.args.check(value_node, ctx, name)
            timeout = (
                STEP_OPTIONS["timeout"].check(options["timeout"][1], ctx)
                if "timeout" in options
                else None
            )
            force = (
                STEP_OPTIONS["force"].check(options["force"][1], ctx)
                if "force" in options
                else False
            )
        except Invalid as exc:
            report(exc.node, str(exc))
            continue
        mark = key_node.start_mark
        where = Where(shown, mark.line + 1, mark.column + 1)
        action = action_class(values, ctx.devices)
        steps.append(Step(event, number, action, where, timeout, force))
    return steps


def _unknown_step_key(key: str, actions: list) -> str:
    from .actions import REGISTRY

    if actions:
        action = actions[0][0]
        if any(f.name == key for f in REGISTRY[action].args.fields):
            return (
                f'"{key}" is an argument of {action}, not of the step; write it inside: '
                f"`{action}: {{..., {key}: ...}}`"
            )
        return (
            f'unknown step option "{key}"{closest(key, tuple(STEP_OPTIONS))}; a step is one action '
            f"plus optional {', '.join(STEP_OPTIONS)}"
        )
    return f'unknown action "{key}"{closest(key, tuple(REGISTRY))}; expected one of {", ".join(REGISTRY)}'
