"""A minimal chroot connection for the Ansible tier's throwaway Debian trees.

ansible-core ships no chroot connection (community.general has one, but collections
cannot be fetched here), so the tests carry this one: each command runs as
`chroot TREE /bin/sh -c CMD` and files go in and out through `dd` inside the tree, so a
symlink in the tree can never make a copy land outside it. Nothing is mounted in the
tree: its /sys and /proc are the fake host's plain files, never this machine's.
"""

from __future__ import annotations

import os
import subprocess

from ansible.errors import AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: chroot
short_description: run tasks inside a directory tree with chroot(8) (tests only)
description:
  - Runs commands with C(chroot TREE /bin/sh -c CMD); nothing is mounted in the tree.
options:
  remote_addr:
    description: the directory tree
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
"""


class Connection(ConnectionBase):
    transport = "chroot"
    has_pipelining = True
    has_tty = False
    default_user = "root"

    def _tree(self) -> str:
        tree = self.get_option("remote_addr")
        if not os.path.isabs(tree) or not os.path.isfile(os.path.join(tree, "bin/sh")):
            raise AnsibleError(f"{tree} is not a directory tree with /bin/sh")
        return tree

    def _connect(self):
        self._tree()
        self._connected = True
        return self

    def _run(self, argv: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
        }
        proc = subprocess.run(
            ["chroot", self._tree(), *argv],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=env,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        return self._run(["/bin/sh", "-c", cmd], in_data)

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as handle:
            data = handle.read()
        code, _, err = self._run(["dd", f"of={out_path}", "bs=65536", "status=none"], data)
        if code != 0:
            raise AnsibleError(
                f"chroot put {in_path} -> {out_path}: {err.decode(errors='replace')}"
            )

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        code, data, err = self._run(["dd", f"if={in_path}", "bs=65536", "status=none"])
        if code != 0:
            raise AnsibleError(f"chroot fetch {in_path}: {err.decode(errors='replace')}")
        with open(out_path, "wb") as handle:
            handle.write(data)

    def close(self):
        self._connected = False
