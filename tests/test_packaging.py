"""The distribution packages' shared pieces, staged into a directory: packaging/hook-setup (what
the .deb's, RPM's and Arch package's maintainer scripts run), packaging/build-files, the logrotate
file, and the versions of debian/changelog, the RPM spec and the PKGBUILD against pyproject.toml.
The .deb itself is built, installed and purged in tests/e2e_libvirt/test_deb_package.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from source_tree import VERSION, copy_source_tree

REPO = Path(__file__).resolve().parent.parent
HOOK_SETUP = REPO / "packaging" / "hook-setup"
BUILD_FILES = REPO / "packaging" / "build-files"
MANIFEST = "var/lib/passthrough-hook/package-files"
MARKER = "installed by the passthrough-hook package"


def listing(root: Path) -> dict[str, str | None]:
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_text()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A staging root as the package leaves it: the hook template in /usr/lib/passthrough-hook."""
    subprocess.run([str(BUILD_FILES), str(tmp_path / "built")], check=True, capture_output=True)
    root = tmp_path / "root"
    (root / "usr/lib/passthrough-hook").mkdir(parents=True)
    shutil.copy2(tmp_path / "built" / "qemu", root / "usr/lib/passthrough-hook/qemu")
    (root / "var/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    return root


def hook_setup(root: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HOOK_SETUP), action],
        env={"PATH": "/usr/bin:/bin", "DESTDIR": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_build_files_makes_the_system_python_hook_and_both_completions(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BUILD_FILES), str(tmp_path)], capture_output=True, text=True, check=True
    )
    hook = (tmp_path / "qemu").read_text()
    assert hook.startswith("#!/usr/bin/python3 -IS\n")
    assert f'LIBDIR = ""  # {MARKER}\n' in hook
    assert os.access(tmp_path / "qemu", os.X_OK)
    assert "complete -F" in (tmp_path / "passthrough-hook.bash").read_text()
    assert (tmp_path / "_passthrough-hook").read_text().startswith("#compdef passthrough-hook")
    if (REPO / "docs" / "passthrough-hook.8").exists():
        assert (tmp_path / "passthrough-hook.8").read_bytes() == (
            REPO / "docs" / "passthrough-hook.8"
        ).read_bytes()
    else:
        assert "build-files: no man page" in result.stderr
        assert not (tmp_path / "passthrough-hook.8").exists()


def test_the_packaged_hook_exits_at_once_for_a_domain_without_profile(root: Path) -> None:
    hook = root / "usr/lib/passthrough-hook/qemu"
    result = subprocess.run(
        [str(hook), "no-such-domain", "prepare", "begin", "-"],
        input="<domain/>",
        capture_output=True,
        text=True,
        env={"PASSTHROUGH_HOOK_CONFIG_DIR": str(root / "etc")},
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_install_places_the_hook_and_remove_takes_exactly_it_away(root: Path) -> None:
    before = listing(root)
    result = hook_setup(root, "install")
    assert result.returncode == 0, result.stderr
    hook = root / "etc/libvirt/hooks/qemu"
    assert hook.read_text() == (root / "usr/lib/passthrough-hook/qemu").read_text()
    assert hook.stat().st_mode & 0o777 == 0o755
    assert (root / "etc/libvirt/hooks/passthrough").is_dir()
    assert (root / MANIFEST).read_text().splitlines() == [
        "dir /etc/libvirt",
        "dir /etc/libvirt/hooks",
        "file /etc/libvirt/hooks/qemu",
        "dir /etc/libvirt/hooks/passthrough",
    ]
    result = hook_setup(root, "remove")
    assert result.returncode == 0, result.stderr
    assert listing(root) == before


def test_a_foreign_hook_is_never_touched_and_ours_goes_to_qemu_d(root: Path) -> None:
    hooks = root / "etc/libvirt/hooks"
    hooks.mkdir(parents=True)
    (hooks / "qemu").write_text("#!/bin/sh\necho mine\n")
    before = listing(root)
    result = hook_setup(root, "install")
    assert result.returncode == 0, result.stderr
    assert (
        "kept your existing /etc/libvirt/hooks/qemu; installed the hook as "
        "/etc/libvirt/hooks/qemu.d/passthrough-hook" in result.stdout
    )
    assert MARKER in (hooks / "qemu.d/passthrough-hook").read_text()
    assert hook_setup(root, "remove").returncode == 0
    assert listing(root) == before


def test_an_upgrade_refreshes_our_hook_and_leaves_one_the_user_replaced(root: Path) -> None:
    assert hook_setup(root, "install").returncode == 0
    template = root / "usr/lib/passthrough-hook/qemu"
    template.write_text(template.read_text() + "# version 2\n")
    assert hook_setup(root, "install").returncode == 0
    hook = root / "etc/libvirt/hooks/qemu"
    assert hook.read_text().endswith("# version 2\n")

    hook.write_text("#!/bin/sh\n# the user's own now\n")
    result = hook_setup(root, "install")
    assert result.returncode == 0
    assert "/etc/libvirt/hooks/qemu is no longer the hook this package wrote" in result.stdout
    assert hook_setup(root, "remove").returncode == 0
    assert hook.read_text() == "#!/bin/sh\n# the user's own now\n"


def test_profiles_keep_their_directory_and_a_later_install_or_purge_still_owns_it(
    root: Path,
) -> None:
    before = listing(root)
    assert hook_setup(root, "install").returncode == 0
    profile = root / "etc/libvirt/hooks/passthrough/win10.yaml"
    profile.write_text("devices: {}\n")
    result = hook_setup(root, "remove")
    assert "kept /etc/libvirt/hooks/passthrough (not empty)" in result.stdout
    assert not (root / "etc/libvirt/hooks/qemu").exists()
    assert profile.read_text() == "devices: {}\n"
    assert result.stdout.count("kept") == 1  # not its parents too
    assert (root / MANIFEST).read_text().splitlines() == [
        "dir /etc/libvirt/hooks/passthrough",
        "dir /etc/libvirt/hooks",
        "dir /etc/libvirt",
    ]
    # Reinstalled (apt install again after apt remove): the directory is still the package's.
    assert hook_setup(root, "install").returncode == 0
    profile.unlink()
    assert hook_setup(root, "remove").returncode == 0
    assert listing(root) == before


def test_remove_refuses_while_a_domain_holds_devices_the_hook_changed(root: Path) -> None:
    assert hook_setup(root, "install").returncode == 0
    (root / "run/passthrough-hook").mkdir(parents=True)
    (root / "run/passthrough-hook/win10.json").write_text("{}")
    result = hook_setup(root, "remove")
    assert result.returncode == 1
    assert "win10 still has devices set up by its profile" in result.stderr
    assert "passthrough-hook recover win10" in result.stderr
    assert (root / "etc/libvirt/hooks/qemu").exists()


def test_install_refuses_next_to_an_install_sh_installation(root: Path) -> None:
    (root / "var/lib/passthrough-hook").mkdir()
    (root / "var/lib/passthrough-hook/installed-files").write_text("file /etc/libvirt/hooks/qemu\n")
    result = hook_setup(root, "install")
    assert result.returncode == 1
    assert "install.sh --uninstall" in result.stderr
    assert not (root / "etc/libvirt").exists()


def test_install_sh_refuses_where_the_package_is_installed(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/passthrough-hook").mkdir(parents=True)
    (tmp_path / "usr/lib/passthrough-hook/hook-setup").write_text("")
    result = subprocess.run(
        [str(REPO / "install.sh"), "--destdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "installed from a distribution package" in result.stderr
    assert not (tmp_path / "etc").exists()


@pytest.mark.skipif(not shutil.which("logrotate"), reason="needs logrotate")
def test_the_logrotate_file_rotates_the_hook_log(tmp_path: Path) -> None:
    log = tmp_path / "passthrough-hook.log"
    log.write_text("2026-12-01 10:00:00,000 [1] INFO win10 prepare/begin: ...\n")
    conf = tmp_path / "logrotate.conf"
    text = (REPO / "packaging/passthrough-hook.logrotate").read_text()
    assert "/var/log/libvirt/passthrough-hook.log {" in text
    conf.write_text(text.replace("/var/log/libvirt/passthrough-hook.log", str(log)))
    result = subprocess.run(
        ["logrotate", "--force", "--state", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "passthrough-hook.log.1").read_text().startswith("2026-12-01")
    assert not log.exists()  # the hook creates it again on its next event


def test_every_package_has_the_version_of_pyproject() -> None:
    changelog = (REPO / "debian/changelog").read_text().splitlines()[0]
    assert re.match(rf"passthrough-hook \({re.escape(VERSION)}\) ", changelog), changelog
    spec = (REPO / "packaging/passthrough-hook.spec").read_text()
    assert re.search(rf"^Version:\s+{re.escape(VERSION)}$", spec, re.M)
    pkgbuild = (REPO / "packaging/PKGBUILD").read_text()
    assert re.search(rf"^pkgver={re.escape(VERSION)}$", pkgbuild, re.M)
    init = (REPO / "passthrough/__init__.py").read_text()
    assert f'__version__ = "{VERSION}"' in init


# --- the RPM spec and the PKGBUILD ---------------------------------------------------------

SPEC = REPO / "packaging" / "passthrough-hook.spec"
PKGBUILD = REPO / "packaging" / "PKGBUILD"


@pytest.mark.skipif(not shutil.which("rpmspec"), reason="needs rpmspec (Debian package rpm)")
def test_the_rpm_spec_parses_with_the_dependencies_and_scripts_of_the_deb() -> None:
    def rpmspec(*args: str) -> str:
        result = subprocess.run(
            ["rpmspec", *args, str(SPEC)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert rpmspec("-q", "--qf", "%{name} %{version}\n").split() == ["passthrough-hook", VERSION]
    requires = rpmspec("-q", "--requires").split()
    assert {"python3-pyyaml", "python3-libvirt"} <= set(requires)
    scripts = rpmspec("-q", "--qf", "[%{FILENAMES}\n]--post--\n%{POSTIN}\n--preun--\n%{PREUN}\n")
    post, preun = scripts.split("--post--\n")[1].split("--preun--\n")
    assert "/usr/lib/passthrough-hook/hook-setup install" in post
    assert "restorecon -R /etc/libvirt/hooks" in post
    assert 'if [ "$1" -eq 0 ]; then\n    /usr/lib/passthrough-hook/hook-setup purge' in preun
    expanded = rpmspec("-P")
    for path in (
        "/usr/lib/passthrough-hook/qemu",
        "/usr/lib/passthrough-hook/hook-setup",
        "/usr/share/bash-completion/completions/passthrough-hook",
        "/usr/share/zsh/site-functions/_passthrough-hook",
        "/etc/logrotate.d/passthrough-hook",
    ):
        assert path in expanded, path


def test_the_pkgbuild_builds_the_same_files_as_the_deb_ships(tmp_path: Path) -> None:
    """Run the PKGBUILD's build, check and package functions as makepkg would (on the working
    tree; its prepare only exports HEAD), with `python` the system python3."""
    pytest.importorskip("build")
    pytest.importorskip("installer")
    copy_source_tree(tmp_path / "src" / f"passthrough-hook-{VERSION}")
    script = (
        f'set -eu\npython() {{ /usr/bin/python3 "$@"; }}\n'
        f"startdir={PKGBUILD.parent} srcdir={tmp_path / 'src'} pkgdir={tmp_path / 'pkg'}\n"
        f"source {PKGBUILD}\nsource {PKGBUILD.parent / 'passthrough-hook.install'}\n"
        "declare -F post_install post_upgrade pre_remove >/dev/null\n"
        'echo "$pkgname $pkgver ${depends[*]} ${backup[*]} $install"\n'
        "build; check; package\n"
    )
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == (
        f"passthrough-hook {VERSION} python python-yaml libvirt-python "
        "etc/logrotate.d/passthrough-hook passthrough-hook.install"
    )
    pkg = tmp_path / "pkg"
    shipped = {str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file()}
    # Where `python -m installer` puts the package and the command is the python's scheme:
    # /usr/lib/python3.X/site-packages and /usr/bin on Arch, /usr/local/... on Debian.
    site = next(pkg.glob("usr/**/passthrough/cli.py")).parent.parent.relative_to(pkg)
    bindir = "usr/bin" if str(site).startswith("usr/lib/") else "usr/local/bin"
    for path in (
        f"{bindir}/passthrough-hook",
        "usr/lib/passthrough-hook/qemu",
        "usr/lib/passthrough-hook/hook-setup",
        "usr/share/bash-completion/completions/passthrough-hook",
        "usr/share/zsh/site-functions/_passthrough-hook",
        "etc/logrotate.d/passthrough-hook",
        "usr/share/doc/passthrough-hook/examples/win10.yaml",
        f"{site}/passthrough/cli.py",
        f"{site}/passthrough/profile.schema.json",
    ):
        assert path in shipped, path
    assert os.access(pkg / "usr/lib/passthrough-hook/qemu", os.X_OK)
    assert (
        (pkg / "usr/lib/passthrough-hook/qemu").read_text().startswith("#!/usr/bin/python3 -IS\n")
    )


# Debian has rpmbuild but not Fedora's pyproject-rpm-macros: these stand in for them with the
# same tools (build, installer), so that %prep, %build, %install, %check and %files run for
# real, including rpmbuild's check that every installed file is packaged. One line each: a
# continued macro line keeps its newline, which would split the shell command.
PYPROJECT_MACROS = """\
%python3 /usr/bin/python3
%python3_sitelib {sitelib}
%pyproject_files %{{_builddir}}/pyproject-files
%pyproject_buildrequires echo
%pyproject_wheel %{{python3}} -m build --wheel --no-isolation --outdir pyproject-wheeldir
%pyproject_install %{{python3}} -m installer --prefix=/usr --destdir=%{{buildroot}} pyproject-wheeldir/*.whl; if [ -d %{{buildroot}}/usr/local ]; then cp -a %{{buildroot}}/usr/local/. %{{buildroot}}/usr/ && rm -rf %{{buildroot}}/usr/local; fi
%pyproject_save_files() echo '%{{python3_sitelib}}/%1/' > %{{pyproject_files}}; echo '%{{python3_sitelib}}/passthrough_hook-%{{version}}.dist-info/' >> %{{pyproject_files}}
%pyproject_check_import %{{python3}} -c 'import sys; sys.path.insert(0, "%{{buildroot}}%{{python3_sitelib}}"); import passthrough.cli'
"""
PURELIB = 'import sysconfig; print(sysconfig.get_paths(vars={"base": "/usr", "platbase": "/usr"})["purelib"])'


@pytest.mark.skipif(not shutil.which("rpmbuild"), reason="needs rpmbuild (Debian package rpm)")
def test_rpmbuild_builds_the_rpm_with_every_installed_file_packaged(tmp_path: Path) -> None:
    pytest.importorskip("build")
    pytest.importorskip("installer")
    # Where `installer --prefix=/usr` of the system python puts packages, without Debian's
    # /usr/local.
    purelib = subprocess.run(
        ["/usr/bin/python3", "-c", PURELIB], capture_output=True, text=True, check=True
    ).stdout.strip()
    sitelib = purelib.replace("/usr/local/", "/usr/", 1)
    (tmp_path / "macros").write_text(PYPROJECT_MACROS.format(sitelib=sitelib))
    top = tmp_path / "rpmbuild"
    src = copy_source_tree(tmp_path / f"passthrough-hook-{VERSION}")
    (top / "SOURCES").mkdir(parents=True)
    subprocess.run(
        ["tar", "-czf", str(top / "SOURCES" / f"passthrough-hook-{VERSION}.tar.gz"), src.name],
        cwd=tmp_path,
        check=True,
    )
    result = subprocess.run(
        ["rpmbuild", "-bb", "--nodeps", "--define", f"_topdir {top}"]
        + ["--load", str(tmp_path / "macros"), str(SPEC)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    (rpm,) = (top / "RPMS" / "noarch").glob(f"passthrough-hook-{VERSION}-1*.noarch.rpm")
    files = subprocess.run(
        ["rpm", "-qlp", str(rpm)], capture_output=True, text=True, check=True
    ).stdout.split()
    for path in (
        "/usr/bin/passthrough-hook",
        "/usr/lib/passthrough-hook/qemu",
        "/usr/lib/passthrough-hook/hook-setup",
        "/usr/share/bash-completion/completions/passthrough-hook",
        "/usr/share/zsh/site-functions/_passthrough-hook",
        "/etc/logrotate.d/passthrough-hook",
        f"{sitelib}/passthrough/cli.py",
        f"{sitelib}/passthrough/profile.schema.json",
    ):
        assert path in files, path
    assert any(path.endswith("/examples/win10.yaml") for path in files), files
    if (REPO / "docs/passthrough-hook.8").exists():
        assert any(path.startswith("/usr/share/man/man8/passthrough-hook.8") for path in files)
    if (REPO / "LICENSE").exists():
        assert any(path.endswith("/LICENSE") for path in files), files
    configs = subprocess.run(
        ["rpm", "-qcp", str(rpm)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert configs == ["/etc/logrotate.d/passthrough-hook"]
