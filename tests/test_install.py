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
    assert text.startswith("#!/usr/bin/python3 -IS\n")
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


# --- security policies: the policy tools faked on PATH, the policy state in the staging root ---

FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
{body}
"""


def fake_tools(tmp_path: Path, **bodies: str) -> tuple[dict, Path]:
    """A PATH whose first directory holds the given tools; each logs its argv to calls.log."""
    bin_dir, log = tmp_path / "fakebin", tmp_path / "calls.log"
    bin_dir.mkdir()
    log.write_text("")
    for name, body in bodies.items():
        tool = bin_dir / name
        tool.write_text(FAKE_TOOL.format(log=log, body=body))
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}, log


def staged_install(root: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "install.sh"), "--destdir", str(root), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def selinux_root(tmp_path: Path, boolean: str | None) -> Path:
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    selinux = root / "sys/fs/selinux"
    (selinux / "booleans").mkdir(parents=True)
    (selinux / "enforce").write_text("1")
    if boolean is not None:
        (selinux / "booleans/virt_hooks_unconfined").write_text(f"{boolean} {boolean}")
    return root


def test_selinux_labels_what_it_installs_and_prints_the_boolean_to_turn_on(tmp_path):
    root = selinux_root(tmp_path, "0")
    env, log = fake_tools(
        tmp_path, restorecon="exit 0", getsebool='echo "virt_hooks_unconfined --> off"'
    )
    before = listing(root)
    result = staged_install(root, env)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        f"restorecon -R {root}/etc/libvirt/hooks {root}/usr/local/bin/passthrough-hook "
        f"{root}/usr/local/lib/passthrough-hook",
        "getsebool virt_hooks_unconfined",
    ]
    lines = result.stdout.splitlines()
    assert (
        "install.sh: SELinux: labelled /etc/libvirt/hooks, /usr/local/bin/passthrough-hook and "
        "/usr/local/lib/passthrough-hook (restorecon -R)"
    ) in lines
    assert lines[-3:] == [
        "install.sh: SELinux: virt_hooks_unconfined is off, so libvirt runs hooks confined and the hook's",
        "install.sh:   sysfs writes and modprobe are denied. To let it work, run:",
        "install.sh:   setsebool -P virt_hooks_unconfined on",
    ]
    assert staged_install(root, env, "--uninstall").returncode == 0
    assert listing(root) == before


def test_selinux_boolean_on_is_said_and_nothing_to_turn_on(tmp_path):
    root = selinux_root(tmp_path, "1")
    env, log = fake_tools(tmp_path, restorecon="exit 0")  # no getsebool: the root's boolean file
    result = staged_install(root, env)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["restorecon"]
    assert result.stdout.splitlines()[-1] == (
        "install.sh: SELinux: virt_hooks_unconfined is on: libvirt runs the hook unconfined"
    )
    assert "setsebool" not in result.stdout


def test_selinux_a_failing_restorecon_is_reported_and_the_install_stands(tmp_path):
    root = selinux_root(tmp_path, None)
    env, log = fake_tools(tmp_path, restorecon="exit 1")
    result = staged_install(root, env)
    assert result.returncode == 0, result.stderr
    assert (
        "install.sh: SELinux: restorecon -R /etc/libvirt/hooks /usr/local/bin/passthrough-hook "
        "/usr/local/lib/passthrough-hook failed; run it again as root"
    ) in result.stdout.splitlines()
    assert "has no virt_hooks_unconfined boolean" in result.stdout.splitlines()[-1]
    assert (root / "etc/libvirt/hooks/qemu").is_file()


def test_without_selinux_no_policy_tool_runs(tmp_path):
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    env, log = fake_tools(
        tmp_path, restorecon="exit 0", getsebool="exit 0", selinuxenabled="exit 0"
    )
    result = staged_install(root, env)
    assert result.returncode == 0, result.stderr
    assert (
        log.read_text() == ""
    )  # a staging root without sys/fs/selinux: not this machine's SELinux
    assert "SELinux" not in result.stdout and "AppArmor" not in result.stdout


# What libvirt's AppArmor profile for libvirtd says about hooks (src/security/apparmor/usr.sbin.libvirtd.in).
LIBVIRTD_PROFILE = """\
#include <tunables/global>
profile libvirtd /usr/sbin/libvirtd flags=(attach_disconnected) {
  / r,
  /** rwmkl,
  /usr/sbin/* PUx,
  /etc/libvirt/hooks/** rmix,
  include if exists <local/usr.sbin.libvirtd>
}
"""


def apparmor_root(tmp_path: Path, profile: str) -> Path:
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "sys/module/apparmor/parameters").mkdir(parents=True)
    (root / "sys/module/apparmor/parameters/enabled").write_text("Y\n")
    (root / "etc/apparmor.d").mkdir(parents=True)
    (root / "etc/apparmor.d/usr.sbin.libvirtd").write_text(profile)
    return root


def test_apparmor_libvirtd_profile_runs_hooks_so_no_override_is_installed(tmp_path):
    root = apparmor_root(tmp_path, LIBVIRTD_PROFILE)
    env, log = fake_tools(tmp_path, apparmor_parser="exit 0", restorecon="exit 0")
    before = listing(root)
    result = staged_install(root, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "install.sh: AppArmor: /etc/apparmor.d/usr.sbin.libvirtd runs hooks inside its profile "
        "(/etc/libvirt/hooks/** rmix); no local override is needed"
    )
    assert log.read_text() == ""  # nothing reloaded, nothing relabelled
    assert not (root / "etc/apparmor.d/local").exists()
    assert staged_install(root, env, "--uninstall").returncode == 0
    assert listing(root) == before


def test_apparmor_a_profile_without_the_hooks_rule_gets_the_lines_to_add(tmp_path):
    root = apparmor_root(tmp_path, LIBVIRTD_PROFILE.replace("  /etc/libvirt/hooks/** rmix,\n", ""))
    env, log = fake_tools(tmp_path, apparmor_parser="exit 0")
    result = staged_install(root, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == [
        "install.sh: AppArmor: /etc/apparmor.d/usr.sbin.libvirtd has no rule for /etc/libvirt/hooks/**: add",
        "install.sh:   /etc/libvirt/hooks/** rmix,",
        "install.sh:   to /etc/apparmor.d/local/usr.sbin.libvirtd, then: apparmor_parser -r "
        "/etc/apparmor.d/usr.sbin.libvirtd",
    ]
    assert log.read_text() == ""


def test_uninstall_refuses_while_a_domain_holds_devices_the_hook_changed(tmp_path):
    (tmp_path / "var/lib").mkdir(parents=True)
    assert install(tmp_path).returncode == 0
    (tmp_path / "run/passthrough-hook").mkdir(parents=True)
    (tmp_path / "run/passthrough-hook/win10.json").write_text("{}")
    result = install(tmp_path, "--uninstall")
    assert result.returncode == 1
    assert "win10 still has devices set up by its profile" in result.stderr
    assert "passthrough-hook recover win10" in result.stderr
    assert (tmp_path / "etc/libvirt/hooks/qemu").exists()


def test_install_puts_a_logrotate_file_for_the_hook_log(tmp_path):
    (tmp_path / "var/lib").mkdir(parents=True)
    assert install(tmp_path).returncode == 0
    logrotate = tmp_path / "etc/logrotate.d/passthrough-hook"
    assert logrotate.read_text() == (REPO / "packaging/passthrough-hook.logrotate").read_text()
    assert install(tmp_path, "--uninstall").returncode == 0
    assert not (tmp_path / "etc/logrotate.d").exists()


def test_the_installed_hook_runs_when_executed_as_libvirt_does(tmp_path):
    """libvirt execs the file: the kernel passes the #! line's options as one argument, so
    they must be one word (`-IS`; `-I -S` makes python exit 2 on every event)."""
    (tmp_path / "var/lib").mkdir(parents=True)
    assert install(tmp_path).returncode == 0
    result = subprocess.run(
        [str(tmp_path / "etc/libvirt/hooks/qemu"), "no-such-domain", "prepare", "begin", "-"],
        input="<domain/>",
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
