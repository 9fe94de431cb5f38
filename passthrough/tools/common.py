"""What the commands share: option spellings, where profiles live, and profile lookup."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from ..constants import CONFIG_DIR, CONFIG_DIR_ENV, PROG
from ..errors import UsageError

__all__ = ["CONFIG_DIR", "PROG"]  # the tools import them from here


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are UsageErrors: one message, exit 2, and with --json one
    JSON document (argparse's own error() prints usage and exits)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (`{self.prog} --help` lists the arguments)")


def parser_for(command: str, description: str) -> argparse.ArgumentParser:
    return Parser(prog=f"{PROG} {command}", description=description)


def add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help="read the host from this tree (a `snapshot` directory) instead of /",
    )


def add_config_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir", metavar="DIR", help=f"where profiles live (default {CONFIG_DIR})"
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_domain_xml(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--xml",
        metavar="FILE",
        help="read the domain XML from FILE (`virsh dumpxml DOMAIN > FILE`) instead of asking libvirt",
    )
    parser.add_argument(
        "--connect",
        metavar="URI",
        default="qemu:///system",
        help="libvirt URI to read the domain XML from (read-only; default qemu:///system)",
    )


def config_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "config_dir", None) or os.environ.get(CONFIG_DIR_ENV) or CONFIG_DIR)


def existing_profile(directory: Path, domain: str) -> Path:
    """The profile of a domain; UsageError saying how to create one when there is none."""
    from ..profile import find_profile

    path = find_profile(directory, domain)
    if path is None:
        raise UsageError(
            f"{domain} has no profile in {directory} (no {domain}.yaml); write a first one with "
            f"`{PROG} init {domain}`"
        )
    return Path(path)


def wrap(text: str, first: str = "", rest: str = "", width: int = 110) -> list[str]:
    """Lines for a terminal; paths, addresses and XML are never split (they are pasted)."""
    import textwrap

    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
