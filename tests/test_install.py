"""install.sh staged into a directory: what it installs, that it keeps a foreign hook,
that the installed hook and command run, and that --uninstall removes exactly its files."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def install(dest: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "install.sh"), "--destdir", str(dest), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_install_and_uninstall_into_a_staging_root(tmp_path):
    (tmp_path / "var/lib").mkdir(parents=True)
    before = listing(tmp_path)
    result = install(tmp_path)
    assert result.returncode == 0, result.stderr
    hook = tmp_path / "etc/libvirt/hooks/qemu"
    text = hook.read_text()
    assert text.startswith("#!/usr/bin/python3 -I\n")
    assert 'LIBDIR = "/usr/local/lib/passthrough-hook"' in text
    assert os.access(hook, os.X_OK)
    assert (tmp_path / "usr/local/lib/passthrough-hook/passthrough/actions/resize_bar.py").is_file()
    assert (tmp_path / "etc/libvirt/hooks/passthrough/win10.yaml.example").is_file()
    assert not (
        tmp_path / "etc/libvirt/hooks/passthrough/win10.yaml"
    ).exists()  # examples never run

    # The staged command runs from its own copy of the package.
    command = tmp_path / "usr/local/bin/passthrough-hook"
    script = command.read_text().replace(
        "/usr/local/lib/passthrough-hook", str(tmp_path / "usr/local/lib/passthrough-hook")
    )
    run = subprocess.run(
        [
            "/usr/bin/python3",
            "-I",
            "-c",
            script.split("\n", 1)[1],
            "validate",
            str(REPO / "config/win10.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and "ok (2 devices, 3 steps)" in run.stdout, run

    result = install(tmp_path, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert listing(tmp_path) == before


def test_a_foreign_hook_is_kept_and_ours_goes_to_qemu_d(tmp_path):
    (tmp_path / "var/lib").mkdir(parents=True)
    hooks = tmp_path / "etc/libvirt/hooks"
    hooks.mkdir(parents=True)
    (hooks / "qemu").write_text("#!/bin/sh\necho mine\n")
    before = listing(tmp_path)
    result = install(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kept your existing /etc/libvirt/hooks/qemu" in result.stdout
    assert (hooks / "qemu").read_text() == "#!/bin/sh\necho mine\n"
    assert "passthrough" in (hooks / "qemu.d/passthrough-hook").read_text()
    assert install(tmp_path, "--uninstall").returncode == 0
    assert listing(tmp_path) == before
    assert (hooks / "qemu").read_text() == "#!/bin/sh\necho mine\n"


def test_user_profiles_survive_uninstall(tmp_path):
    (tmp_path / "var/lib").mkdir(parents=True)
    assert install(tmp_path).returncode == 0
    profile = tmp_path / "etc/libvirt/hooks/passthrough/win10.yaml"
    profile.write_text("devices: {}\n")
    result = install(tmp_path, "--uninstall")
    assert "kept /etc/libvirt/hooks/passthrough (not empty)" in result.stdout
    assert profile.read_text() == "devices: {}\n"
