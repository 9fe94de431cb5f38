"""`passthrough-hook edit DOMAIN`: visudo-style editing, with EDITOR set to scripts."""

import io
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from runs import command, program
from tool_trees import REPO

PROFILE = (REPO / "config" / "win10.yaml").read_text()


@pytest.fixture
def profiles(tmp_path, monkeypatch):
    directory = tmp_path / "profiles"
    directory.mkdir()
    (directory / "win10.yaml").write_text(PROFILE)
    monkeypatch.delenv("VISUAL", raising=False)
    return directory


def editor(tmp_path, monkeypatch, body: str, variable: str = "EDITOR") -> None:
    """EDITOR = a shell script; $1 is the file to edit."""
    script = tmp_path / f"editor-{variable}.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv(variable, str(script))


def edit_profile(profiles, monkeypatch, answers=""):
    """Run `edit` through the program's entry point, answers on stdin."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(answers))
    return command("edit", "--config-dir", profiles, "win10")


BREAK = "sed -i 's/- detach:/- detatch:/' \"$1\"\n"
FIX_SIZE = "sed -i 's/size: 8MiB/size: 16MiB/' \"$1\"\n"


def test_valid_edit_replaces_the_file_keeping_owner_and_mode(profiles, tmp_path, monkeypatch):
    path = profiles / "win10.yaml"
    os.chown(path, 1234, 5678)
    path.chmod(0o640)
    inode = path.stat().st_ino
    editor(tmp_path, monkeypatch, FIX_SIZE)
    code, out, err = edit_profile(profiles, monkeypatch)
    assert (code, err) == (0, "")
    assert out == (
        f"{path}: valid, saved\nNext: `passthrough-hook check win10` checks it against this host.\n"
    )
    assert path.read_text() == PROFILE.replace("size: 8MiB", "size: 16MiB")
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 5678, 0o640)
    assert info.st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert sorted(p.name for p in profiles.iterdir()) == ["win10.yaml"]


def test_invalid_edit_can_be_discarded(profiles, tmp_path, monkeypatch):
    editor(tmp_path, monkeypatch, BREAK)
    code, out, err = edit_profile(profiles, monkeypatch, "x\n")
    assert code == 2
    assert err.startswith(
        f'{profiles}/win10.yaml:13:5: unknown action "detatch" (did you mean "detach"?)'
    )
    assert "(e)dit again or e(x)it discarding your changes? [e/x]" in out
    assert out.endswith(f"discarded your changes; {profiles}/win10.yaml is left as it was\n")
    assert (profiles / "win10.yaml").read_text() == PROFILE


def test_invalid_edit_can_be_edited_again_until_valid(profiles, tmp_path, monkeypatch):
    marker = tmp_path / "second-run"
    # First run breaks the profile; the second repairs it and changes the size.
    editor(
        tmp_path,
        monkeypatch,
        f"if [ -e {marker} ]; then sed -i 's/- detatch:/- detach:/' \"$1\"; {FIX_SIZE}"
        f"else touch {marker}; {BREAK}fi\n",
    )
    code, out, _ = edit_profile(profiles, monkeypatch, "maybe\ne\n")
    assert code == 0
    assert out.count("[e/x]") == 2  # "maybe" is asked again
    assert (profiles / "win10.yaml").read_text() == PROFILE.replace("size: 8MiB", "size: 16MiB")


def test_end_of_input_discards(profiles, tmp_path, monkeypatch):
    editor(tmp_path, monkeypatch, BREAK)
    code, _, _ = edit_profile(profiles, monkeypatch, "")
    assert code == 2 and (profiles / "win10.yaml").read_text() == PROFILE


def test_editor_failure_and_no_change_leave_the_file(profiles, tmp_path, monkeypatch):
    editor(tmp_path, monkeypatch, FIX_SIZE + "exit 3\n")
    code, _, err = edit_profile(profiles, monkeypatch)
    assert code == 1 and "exited with status 3" in err
    editor(tmp_path, monkeypatch, "true\n")
    code, out, _ = edit_profile(profiles, monkeypatch)
    assert code == 0 and out == f"no changes; {profiles}/win10.yaml is left as it was\n"
    assert (profiles / "win10.yaml").read_text() == PROFILE


def test_a_file_changed_meanwhile_is_not_overwritten(profiles, tmp_path, monkeypatch):
    real = profiles / "win10.yaml"
    editor(tmp_path, monkeypatch, FIX_SIZE + f"echo '# someone else' >> {real}\n")
    code, _, err = edit_profile(profiles, monkeypatch)
    assert code == 2
    assert "was changed by someone else while you edited it, so it was not replaced" in err
    kept = err.split("your version is in ")[1].split(":")[0]
    assert "size: 16MiB" in Path(kept).read_text()
    shutil.rmtree(os.path.dirname(kept))
    assert real.read_text() == PROFILE + "# someone else\n"


def test_visual_wins_and_may_carry_arguments(profiles, tmp_path, monkeypatch):
    editor(tmp_path, monkeypatch, "exit 1\n")  # EDITOR would fail
    script = tmp_path / "visual.sh"
    script.write_text('sed -i "s/size: 8MiB/size: $1/" "$2"\n')
    monkeypatch.setenv("VISUAL", f"sh {script} 32MiB")
    code, _, _ = edit_profile(profiles, monkeypatch)
    assert code == 0 and "size: 32MiB" in (profiles / "win10.yaml").read_text()


def test_a_symlinked_profile_stays_a_symlink(profiles, tmp_path, monkeypatch):
    target = tmp_path / "elsewhere.yaml"
    (profiles / "win10.yaml").rename(target)
    (profiles / "win10.yaml").symlink_to(target)
    editor(tmp_path, monkeypatch, FIX_SIZE)
    assert edit_profile(profiles, monkeypatch)[0] == 0
    assert (profiles / "win10.yaml").is_symlink() and "size: 16MiB" in target.read_text()


def test_edit_as_users_run_it(profiles, tmp_path):
    script = tmp_path / "editor.sh"
    script.write_text("#!/bin/sh\n" + BREAK)
    script.chmod(0o755)
    result = program(
        "edit",
        "--config-dir",
        profiles,
        "win10",
        stdin="x\n",
        env={"EDITOR": str(script), "VISUAL": ""},
    )
    assert result.code == 2, result.err
    assert 'unknown action "detatch"' in result.err and "Traceback" not in result.err
    assert (profiles / "win10.yaml").read_text() == PROFILE


def test_no_profile_points_at_init(tmp_path):
    code, _, err = command("edit", "--config-dir", tmp_path, "win11")
    assert code == 2 and "write a first one with `passthrough-hook init win11`" in err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_after_a_valid_save_at_a_terminal_it_offers_the_preflight(profiles, tmp_path, monkeypatch):
    editor(tmp_path, monkeypatch, FIX_SIZE)
    ran = []
    monkeypatch.setattr(
        "passthrough.tools.check.main", lambda argv, out, err: ran.append(argv) or 0
    )
    monkeypatch.setattr(sys, "stdin", Terminal("\n"))  # Enter: yes
    result = command("edit", "--config-dir", profiles, "win10")
    assert result.code == 0
    assert "Run the preflight (`passthrough-hook check win10`) against this host now? [Y/n] " in (
        result.out
    )
    assert ran == [["--config-dir", str(profiles), "win10"]]
    editor(tmp_path, monkeypatch, "sed -i 's/size: 16MiB/size: 32MiB/' \"$1\"\n")
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    assert command("edit", "--config-dir", profiles, "win10").code == 0
    assert len(ran) == 1


def test_it_checks_it_can_replace_the_profile_before_the_editor_opens(
    profiles, tmp_path, monkeypatch
):
    opened = tmp_path / "opened"
    editor(tmp_path, monkeypatch, f"touch {opened}\n" + FIX_SIZE)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a directory root owns
    code, _, err = edit_profile(profiles, monkeypatch)
    assert code == 2 and not opened.exists()
    assert err == (
        f"passthrough-hook: cannot replace {profiles}/win10.yaml: its directory {profiles} is not "
        f"writable by you; run as root (`sudo passthrough-hook edit win10`)\n"
    )


def test_when_saving_fails_the_edited_copy_is_kept(profiles, tmp_path, monkeypatch):
    editor(tmp_path, monkeypatch, FIX_SIZE)

    def full_disk(real, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("passthrough.tools.edit.replace_keeping_owner_and_mode", full_disk)
    code, _, err = edit_profile(profiles, monkeypatch)
    assert code == 2 and "was not saved (No space left on device)" in err
    kept = Path(err.split("your edited version is kept in ")[1].strip())
    assert "size: 16MiB" in kept.read_text()
    shutil.rmtree(kept.parent)
    assert (profiles / "win10.yaml").read_text() == PROFILE
