"""scripts: the qemu.d/<vm>/<operation>/<sub-operation>/ layout, run in order with
libvirt's arguments and the domain XML on stdin; refused when others could write them."""

import os
from pathlib import Path

import pytest
from fakecommands import install_fake_commands
from runs import LOG, hook

from passthrough.host.commands import CommandError

DIR = "/etc/libvirt/hooks/qemu.d/win10"
PROFILE = f"prepare/begin:\n  - scripts: {DIR}\nrelease/end:\n  - scripts: {DIR}\n"
XML = "<domain><name>win10</name></domain>"


def script(rel: str, mode: int = 0o755) -> str:
    path = Path("/host" + DIR) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    os.chmod(path, mode)
    return f"{DIR}/{rel}"


@pytest.fixture
def book(kernel):
    book = install_fake_commands(kernel)
    for name in ("20-unbind.sh", "10-stop-dm.sh", "README"):
        path = script(f"prepare/begin/{name}", 0o644 if name == "README" else 0o755)
        book.handlers[path] = lambda argv, stdin: ""
    book.handlers[script("release/end")] = lambda argv, stdin: ""  # one file for the whole event
    for directory in ("", "/prepare", "/prepare/begin", "/release"):
        os.chmod("/host" + DIR + directory, 0o755)
    return book


def test_runs_the_event_scripts_in_order_with_libvirts_arguments_and_the_xml(kernel, book):
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE, xml=XML)
    assert code == 0, err
    assert book.calls == [
        [f"{DIR}/prepare/begin/10-stop-dm.sh", "win10", "prepare", "begin", "-"],
        [f"{DIR}/prepare/begin/20-unbind.sh", "win10", "prepare", "begin", "-"],
    ]
    assert book.stdin == [XML.encode()] * 2
    assert f"skip {DIR}/prepare/begin/README   [not an executable file]" in Path(LOG).read_text()
    code, _, err = hook(kernel, "release", "end", xml=XML)
    assert code == 0, err
    assert book.calls[-1] == [f"{DIR}/release/end", "win10", "release", "end", "-"]


def test_an_event_without_scripts_does_nothing(kernel, book):
    code, _, err = hook(kernel, "started", "begin", profile=f"started/begin:\n  - scripts: {DIR}\n")
    assert code == 0, err
    assert book.calls == []
    assert f"no scripts in {DIR}/started/begin   [nothing to do]" in Path(LOG).read_text()


def test_a_failing_script_fails_the_step_and_stops_the_rest(kernel, book):
    def fails(argv, stdin):
        raise CommandError(argv, 1, "virsh: error: failed to get domain 'win10'")

    book.handlers[f"{DIR}/prepare/begin/10-stop-dm.sh"] = fails
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE, xml=XML)
    assert code == 1
    assert (
        f"`{DIR}/prepare/begin/10-stop-dm.sh win10 prepare begin -` exited with status 1: virsh: error"
        in err
    )
    assert len(book.calls) == 1


@pytest.mark.parametrize("target", ["prepare/begin/20-unbind.sh", "prepare"])
def test_scripts_others_can_write_are_refused(kernel, book, target):
    os.chmod("/host" + DIR + "/" + target, 0o777)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE, xml=XML)
    assert code == 1
    assert f"{DIR}/{target} is writable by group or others" in err
    assert f"chmod go-w {DIR}/{target}" in err
    assert book.calls == []


def test_dry_run_lists_the_scripts_and_runs_none(kernel, book):
    code, out, _ = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True, xml=XML)
    assert code == 0, out
    assert f"1. run the scripts in {DIR}/<operation>/<sub-operation>" in out
    assert f"      {DIR}/prepare/begin/10-stop-dm.sh win10 prepare begin -" in out
    assert book.calls == []


def test_the_directory_must_be_absolute(kernel):
    code, _, err = hook(
        kernel, "prepare", "begin", profile="prepare/begin:\n  - scripts: qemu.d/win10\n"
    )
    assert code == 2 and '"qemu.d/win10" is not the directory of a domain\'s scripts, from /' in err
