"""The one way tests run the program, in-process or as a process, with one set of paths.

Two kinds of caller run passthrough-hook, and each has its function here:

- `command(*argv)`: a person types `passthrough-hook ARGV` (strict). The words are passed as
  given; `kernel=` runs it on the fake kernel instead of the host the options name.
- `hook(kernel, OPERATION, SUB_OPERATION, domain="win10")`: libvirt calls the hook,
  `DOMAIN OP SUB -` with the domain XML on stdin, on the fake kernel at ROOT, with the profiles
  in PROFILES and the state dir and log file under ROOT. `recover(kernel, domain="win10")`
  undoes what a killed run left, with the same paths.

hook() goes through main() with --root/--config-dir/--state-dir/--log-file (the typed,
strict path, with --debug). `libvirt(kernel, OP, SUB)` goes through hook_main, libvirt's
real entry (tolerant and silent), with the same paths.

The same two callers as processes, for what only a process shows (the interpreter line,
imports, the environment): `program(*argv)` is `python -m passthrough ARGV`, and
`hook_process(*argv, config=)` is hooks/qemu as libvirtd runs it.

Every run returns a Result: exit code, stdout, stderr; `.text` is both, for messages looked
for wherever they are printed. `log()` reads the log file the runs wrote.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from passthrough.cli import main
from passthrough.event import Paths
from passthrough.hook import hook_main

if TYPE_CHECKING:
    from fakekernel import FakeKernel

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"  # the project's profiles (the kernel fixture makes them visible)
ROOT = "/host"
PROFILES = Path("/profiles")
STATE_DIR = "run/passthrough-hook"  # under the root, as the program's default is
LOG_FILE = "log/hook.log"
STATE = f"{ROOT}/{STATE_DIR}"
LOG = f"{ROOT}/{LOG_FILE}"
HOOK = REPO / "hooks" / "qemu"
# The interpreter line install.sh keeps (only the path changes): `/usr/bin/python3 -IS`
# (one word: the kernel passes a #! line's options as a single argument).
HOOK_COMMAND = HOOK.read_text().split("\n", 1)[0][2:].split()
LIBVIRT_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}  # all libvirtd gives a hook here
CONFIG_ENV = "PASSTHROUGH_HOOK_CONFIG_DIR"


class Result(NamedTuple):
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        """stdout then stderr."""
        return self.out + self.err


def log(root: str | Path = ROOT) -> str:
    return Path(root, LOG_FILE).read_text(encoding="utf-8")


def tree_options(root: str | Path = ROOT) -> list[str]:
    """--root and the state dir and log file under it."""
    return [
        "--root",
        str(root),
        "--state-dir",
        f"{root}/{STATE_DIR}",
        "--log-file",
        f"{root}/{LOG_FILE}",
    ]


def write_profile(text: str, domain: str = "win10", directory: Path = PROFILES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{domain}.yaml").write_text(text)
    return directory


def command(*argv: str | Path, stdin: str = "", kernel: FakeKernel | None = None) -> Result:
    """`passthrough-hook ARGV` as a person types it."""
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [str(a) for a in argv],
        stdin=io.StringIO(stdin),
        host_factory=kernel.host if kernel is not None else None,
        out=out,
        err=err,
    )
    return Result(code, out.getvalue(), err.getvalue())


def hook(
    kernel: FakeKernel,
    operation: str,
    sub_operation: str,
    *,
    domain: str = "win10",
    profile: str | None = None,
    xml: str = "<domain/>",
    config: str | Path = PROFILES,
    dry_run: bool = False,
    json: bool = False,
    root: str | Path = ROOT,
) -> Result:
    """libvirt's call on the fake kernel. `profile`: the text written to `config`/DOMAIN.yaml
    first. A dry run reads the same tree through the dry-run host. --debug: tests read each
    step's operations from the log."""
    if profile is not None:
        write_profile(profile, domain, Path(config))
    if dry_run:  # a dry run reads journals from a state dir that exists (a real run makes it)
        Path(root, STATE_DIR).mkdir(parents=True, exist_ok=True)
    return command(
        *(["--dry-run"] if dry_run else []),
        *(["--json"] if json else []),
        "--debug",
        "--config-dir",
        config,
        *tree_options(root),
        "--xml",
        "-",  # the XML on stdin, as libvirt gives it
        domain,
        operation,
        sub_operation,
        "-",
        stdin=xml,
        kernel=None if dry_run else kernel,
    )


def libvirt(
    kernel: FakeKernel,
    operation: str,
    sub_operation: str,
    *,
    domain: str = "win10",
    profile: str | None = None,
    xml: str = "<domain/>",
    config: str | Path = PROFILES,
    root: str | Path = ROOT,
) -> Result:
    """libvirt's call through its own entry (hook_main) on the fake kernel, hook()'s paths."""
    if profile is not None:
        write_profile(profile, domain, Path(config))
    out, err = io.StringIO(), io.StringIO()
    paths = Paths(Path(root), Path(config), Path(root, STATE_DIR), Path(root, LOG_FILE))
    code = hook_main(
        [domain, operation, sub_operation, "-"],
        paths=paths,
        host_factory=kernel.host,
        stdin=io.StringIO(xml),
        out=out,
        err=err,
    )
    return Result(code, out.getvalue(), err.getvalue())


def recover(kernel: FakeKernel, domain: str = "win10", *, root: str | Path = ROOT) -> Result:
    """`passthrough-hook recover DOMAIN` with hook()'s paths."""
    return command("recover", *tree_options(root), domain, kernel=kernel)


def _process(argv: list[str], stdin: str, env: dict[str, str], cwd: Path = REPO) -> Result:
    done = subprocess.run(
        argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, env=env
    )
    return Result(done.returncode, done.stdout, done.stderr)


def program(
    *argv: str | Path, stdin: str = "", env: dict[str, str] | None = None, cwd: Path = REPO
) -> Result:
    """`python -m passthrough ARGV` in a process, in the repository or `cwd` (for relative
    paths, as a person types them); `env` is added to this process's environment."""
    where = {"PYTHONPATH": str(REPO)} if cwd != REPO else {}
    return _process(
        [sys.executable, "-m", "passthrough", *map(str, argv)],
        stdin,
        {**os.environ, **where, **(env or {})},
        cwd,
    )


def probe(
    code: str,
    *argv: str,
    env: dict[str, str] | None = None,
    stdin: str = "",
    flags: tuple[str, ...] = (),
) -> dict:
    """`python FLAGS -c CODE ARGV` in a fresh interpreter in the repository (what a new
    process imports); CODE prints one JSON document, returned. `env` replaces the
    environment."""
    result = _process(
        [sys.executable, *flags, "-c", code, *argv],
        stdin,
        env if env is not None else {**os.environ},
    )
    assert result.code == 0, result.err
    return json.loads(result.out)


def hook_process(
    *argv: str,
    config: str | Path | None = None,
    stdin: str = "<domain type='kvm'><name>win10</name></domain>",
) -> Result:
    """hooks/qemu ARGV as libvirtd runs it: its interpreter line, libvirtd's bare environment,
    the XML on stdin; `config` is the profile directory (PASSTHROUGH_HOOK_CONFIG_DIR)."""
    env = {**LIBVIRT_ENV, **({CONFIG_ENV: str(config)} if config is not None else {})}
    return _process([*HOOK_COMMAND, str(HOOK), *argv], stdin, env)
