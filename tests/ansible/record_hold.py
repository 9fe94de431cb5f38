"""Leave a host tree as a started domain leaves it: run a profile's prepare/begin with the
program itself on the fake kernel (tests/fakekernel.py, in pyfakefs), then write the result
(the whole host tree: sys/ and proc/ as the kernel left them, the journal in
run/passthrough-hook/) to a real
directory, to be laid over a test target's root.

    python3 tests/ansible/record_hold.py HOST_SHAPE PROFILE DOMAIN OUT_DIR

The profile is placed where the hook reads it (/etc/libvirt/hooks/passthrough/DOMAIN.yaml),
so the journal names that file and its line:col, as on a real host.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

import yaml  # noqa: E402,F401  loaded before pyfakefs starts (see tests/conftest.py)
from fakekernel import FakeKernel  # noqa: E402
from hosts import HOSTS  # noqa: E402
from pyfakefs.fake_filesystem_unittest import Patcher  # noqa: E402

from passthrough.cli import main  # noqa: E402

CONFIG_DIR = "/etc/libvirt/hooks/passthrough"


def record(shape: str, profile_text: str, domain: str) -> tuple[int, str, dict[str, tuple]]:
    with Patcher() as patcher:
        fs = patcher.fs
        fs.add_real_directory(str(HERE.parent.parent / "passthrough"), read_only=True)
        kernel = FakeKernel(fs, HOSTS[shape](), root="/host")
        fs.create_file(f"{CONFIG_DIR}/{domain}.yaml", contents=profile_text)
        out, err = io.StringIO(), io.StringIO()
        code = main(
            [
                "--root",
                "/host",
                "--config-dir",
                CONFIG_DIR,
                "--state-dir",
                "/host/run/passthrough-hook",
                "--log-file",
                "/host/var/log/libvirt/passthrough-hook.log",
                domain,
                "prepare",
                "begin",
                "-",
            ],
            stdin=io.StringIO("<domain/>"),
            host_factory=kernel.host,
            out=out,
            err=err,
        )
        entries: dict[str, tuple] = {}
        for dirpath, dirs, files in os.walk("/host"):
            rel_dir = os.path.relpath(dirpath, "/host")
            entries[rel_dir] = ("dir", os.stat(dirpath).st_mode & 0o7777)
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                rel = os.path.join(rel_dir, name)
                if os.path.islink(path):
                    entries[rel] = ("link", os.readlink(path))
                elif os.path.isfile(path):
                    with open(path, "rb") as handle:
                        entries[rel] = ("file", handle.read(), os.stat(path).st_mode & 0o7777)
        return code, err.getvalue(), entries


def write_out(entries: dict[str, tuple], out_dir: Path) -> None:
    for rel in sorted(entries):
        kind, *rest = entries[rel]
        path = out_dir / rel
        if kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, rest[0])
        elif kind == "link":
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(rest[0], path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rest[0])
            os.chmod(path, rest[1])


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] not in HOSTS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(HOSTS)}}} PROFILE DOMAIN OUT_DIR")
    shape, profile, domain, out = sys.argv[1:]
    code, errors, entries = record(shape, Path(profile).read_text(), domain)
    if code != 0:
        sys.exit(f"prepare/begin of {domain} on the fake {shape} host failed ({code}):\n{errors}")
    write_out(entries, Path(out))
