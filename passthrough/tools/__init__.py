"""Commands for the person writing profiles: iommu, check, init, edit, status, snapshot,
schema, completion (validate and recover are in cli.py). One module per command, each
with `build_parser()` and `main(argv, out, err) -> int`; cli.py imports a module only
when its command runs.

`iommu`, `check` and `status` only read the host; `init` and `edit` write a profile and
`snapshot` its own directory. They work without root on the real host (except where a
profile or journal is root's), and those that read the host take `--root DIR` to read a
tree that `snapshot` wrote instead of /.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import argparse
    from types import ModuleType

# subcommand -> module under passthrough/tools/
MODULES = {
    "iommu": "iommu",
    "check": "check",
    "init": "init",
    "edit": "edit",
    "status": "status",
    "snapshot": "snapshot",
    "schema": "profile_schema",
    "completion": "completion",
}


class Tool:
    """A subcommand implemented in passthrough/tools/<module>.py. The module is imported
    only when the command runs: the hook's own path must not pay for these commands."""

    def __init__(self, module: str):
        self.module = module

    def _load(self) -> ModuleType:
        import importlib  # not at the top: the hook imports this package on every run with a profile

        return importlib.import_module(f"{__name__}.{self.module}")

    def __call__(self, argv: list[str], out: TextIO, err: TextIO) -> int:
        return int(self._load().main(argv, out, err))

    def build_parser(self) -> argparse.ArgumentParser:
        return self._load().build_parser()


def subcommands() -> dict[str, Tool]:
    return {name: Tool(module) for name, module in MODULES.items()}
