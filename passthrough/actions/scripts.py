from __future__ import annotations

import os

from ..errors import HostError
from ..schema import AbsolutePath, Args, ArgValues, Field, Seconds
from .base import NotUndoable, StepContext


def check_ownership(path: str, shown: str) -> None:
    """A root hook runs these as root: refuse what another user could have written
    (the same rule as for profiles: passthrough.trust)."""
    from ..trust import untrusted

    problem = untrusted(path)
    if problem:
        message, fix = problem
        raise HostError(message.replace(path, shown), hint=fix.replace(path, shown))


def find_scripts(root: str, directory: str, event: str) -> tuple[list[str], list[str]]:
    """(scripts to run, entries skipped) for an event: DIR/<operation>/<sub-operation> is
    one executable file, or a directory whose executable files run in name order."""
    shown = f"{directory}/{event}"
    local = os.path.join(root, shown.lstrip("/"))
    if not os.path.exists(local):
        return [], []
    for part in (directory, f"{directory}/{event.split('/')[0]}", shown):
        check_ownership(os.path.join(root, part.lstrip("/")), part)
    if os.path.isfile(local):
        return ([shown], []) if os.access(local, os.X_OK) else ([], [shown])
    scripts, skipped = [], []
    for name in sorted(os.listdir(local)):  # strcmp order, as libvirt orders hooks
        path = os.path.join(local, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            check_ownership(path, f"{shown}/{name}")
            scripts.append(f"{shown}/{name}")
        else:
            skipped.append(f"{shown}/{name}")
    return scripts, skipped


class ScriptsArgs(ArgValues):
    dir: str
    each: float


class Scripts(NotUndoable):
    """Run legacy hook scripts (`scripts: /etc/libvirt/hooks/qemu.d/win10`), so a setup can
    move to profiles one script at a time. The layout is the widely used one:
    DIR/<operation>/<sub-operation>/ holds the scripts of an event (prepare/begin,
    release/end, ...), or is itself one script. Executable files run in name order, each
    with the arguments libvirt gives hooks (domain, operation, sub-operation, -) and the
    domain XML on stdin, bounded by `each` seconds; a non-zero exit fails the step. Files
    or directories writable by others than root are refused. Not undone: the scripts of
    release/end are what undoes them."""

    name = "scripts"
    args = Args(
        values=ScriptsArgs,
        fields=(
            Field(
                "dir",
                AbsolutePath("the directory of a domain's scripts, from /"),
                required=True,
                doc="e.g. /etc/libvirt/hooks/qemu.d/win10",
            ),
            Field(
                "each", Seconds(), default=120.0, doc="seconds each script may run (default 120)"
            ),
        ),
        shorthand="dir",
    )
    params: ScriptsArgs
    default_timeout = 300.0
    undo_note = "nothing (scripts are not undone; release/end's scripts do that)"

    def needs_domain_xml(self) -> bool:
        return True  # each script gets it on stdin, as libvirt gives it to hooks

    def describe(self) -> str:
        return f"run the scripts in {self.params.dir}/<operation>/<sub-operation>"

    def apply(self, ctx: StepContext) -> dict:
        if not ctx.event:
            raise HostError("scripts can only run inside a libvirt event")
        host = ctx.host
        scripts, skipped = find_scripts(str(host.root), self.params.dir, ctx.event)
        for path in skipped:
            host.record(f"skip {path}", "not an executable file")
        if not scripts:
            host.record(f"no scripts in {self.params.dir}/{ctx.event}", "nothing to do")
        operation, sub_operation = ctx.event.split("/")
        xml = ctx.domain_xml.encode()
        for script in scripts:
            host.commands.run(
                [script, ctx.domain, operation, sub_operation, "-"],
                timeout=self.params.each,
                stdin=xml,
            )
        return {"ran": scripts}
