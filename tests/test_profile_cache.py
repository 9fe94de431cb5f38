"""libvirt's calls keep the profiles they validated (passthrough/profile_cache.py): the copy
stands for the file only while the file, the code and the interpreter are the same, and
only a copy a root hook may trust is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runs import PROFILES, STATE, libvirt, write_profile

from passthrough import profile_cache
from passthrough.errors import ProfileError
from passthrough.event import Paths, Request, Work, resolve
from passthrough.profile import Profile, load_profile

REPO = Path(__file__).resolve().parent.parent
GOVERNOR = "prepare/begin:\n  - governor: performance\n"


def shape(profile: Profile) -> tuple:
    """Everything of a profile the hook uses (actions compare by class and values)."""
    steps = {
        event: [
            (s.number, type(s.action), s.action.params, s.action.names, s.where, s.timeout, s.force)
            for s in steps
        ]
        for event, steps in profile.events.items()
    }
    return (profile.path, profile.devices, profile.log_level, steps)


def libvirt_request(tmp_path: Path, person: bool = False) -> Request:
    paths = Paths.resolve(root=str(tmp_path), config_dir=str(tmp_path / "config"))
    Path(paths.state_dir).mkdir(
        parents=True, mode=0o700, exist_ok=True
    )  # as a run that changed the host left it
    return Request(domain="win10", event="prepare/begin", paths=paths, person=person)


def profile_file(tmp_path: Path, text: str = GOVERNOR) -> Path:
    (tmp_path / "config").mkdir(exist_ok=True)
    path = tmp_path / "config" / "win10.yaml"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def steps_of(work: Work | object) -> list[str]:
    assert isinstance(work, Work)
    return [step.action.describe() for step in work.steps]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_the_copy_of_every_bundled_profile_is_the_profile(tmp_path, name):
    path = tmp_path / name
    path.write_bytes((REPO / "config" / name).read_bytes())
    parsed = load_profile(path)
    profile_cache.store(tmp_path, "win10", path, os.stat(path), parsed)
    copy = profile_cache.load(tmp_path, "win10", path)
    assert copy is not None
    assert shape(copy) == shape(parsed)


def test_libvirts_second_call_runs_from_the_copy_its_first_call_kept(kernel, monkeypatch):
    write_profile((REPO / "config" / "win10.yaml").read_text())
    copy = Path(STATE) / "profiles" / "win10.cache"
    assert libvirt(kernel, "prepare", "begin").code == 0
    assert not copy.exists()  # the state directory is made by that run, after the parse
    assert libvirt(kernel, "release", "end").code == 0
    assert copy.exists() and copy.stat().st_mode & 0o777 == 0o600

    def no_parsing(*args, **kwargs):
        raise AssertionError("the profile was parsed again")

    monkeypatch.setattr("passthrough.profile.parse_profile", no_parsing)
    assert libvirt(kernel, "prepare", "begin").code == 0
    assert (Path(STATE) / "win10.json").exists()
    released = libvirt(kernel, "release", "end")
    assert released.code == 0, released.text
    assert "undone" in released.text
    assert not (Path(STATE) / "win10.json").exists()  # everything was put back


def test_an_edit_that_keeps_size_and_mtime_is_still_seen(tmp_path):
    """The copy is keyed on ctime too, which no write leaves as it was."""
    path = profile_file(tmp_path)
    assert steps_of(resolve(libvirt_request(tmp_path))) == [
        "set the cpufreq governor of every CPU to performance"
    ]
    before = os.stat(path)
    path.write_text(GOVERNOR.replace("governor:", "governer:"))  # same size, a typo
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size
    with pytest.raises(ProfileError, match='unknown action "governer"'):
        resolve(libvirt_request(tmp_path))


def test_a_changed_code_file_makes_the_copy_stale(tmp_path, monkeypatch):
    path = profile_file(tmp_path)
    resolve(libvirt_request(tmp_path))
    state = tmp_path / "run/passthrough-hook"
    assert profile_cache.load(state, "win10", path) is not None
    stamp = profile_cache.code_stamp()
    monkeypatch.setattr(profile_cache, "code_stamp", lambda: (*stamp, ("new.py", 1, 1)))
    assert profile_cache.load(state, "win10", path) is None


def test_a_copy_root_must_not_trust_is_not_read(tmp_path):
    path = profile_file(tmp_path)
    resolve(libvirt_request(tmp_path))
    state = tmp_path / "run/passthrough-hook"
    copy = Path(profile_cache.cache_path(state, "win10"))
    assert profile_cache.load(state, "win10", path) is not None
    os.chmod(copy, 0o620)  # writable by its group: anyone in it could choose root's steps
    assert profile_cache.load(state, "win10", path) is None
    os.chmod(copy, 0o600)
    os.chmod(copy.parent, 0o777)
    assert profile_cache.load(state, "win10", path) is None


@pytest.mark.parametrize("junk", [b"", b"\x00garbage", b"{}", bytes(range(200, 256))])
def test_a_broken_copy_is_parsed_again_and_replaced(tmp_path, junk):
    path = profile_file(tmp_path)
    state = tmp_path / "run/passthrough-hook"
    copy = Path(profile_cache.cache_path(state, "win10"))
    copy.parent.mkdir(parents=True, mode=0o700)
    copy.write_bytes(junk)
    os.chmod(copy, 0o600)
    assert steps_of(resolve(libvirt_request(tmp_path))) == [
        "set the cpufreq governor of every CPU to performance"
    ]
    assert profile_cache.load(state, "win10", path) is not None


def test_a_persons_command_parses_the_file_and_keeps_no_copy(tmp_path):
    profile_file(tmp_path)
    assert steps_of(resolve(libvirt_request(tmp_path, person=True)))
    assert not (tmp_path / "run/passthrough-hook/profiles").exists()


def test_no_copy_makes_the_state_directory_or_fails_the_call_where_it_cannot_be_written(
    tmp_path,
):
    profile_file(tmp_path)
    request = libvirt_request(tmp_path)
    state = Path(request.paths.state_dir)
    state.rmdir()
    assert steps_of(resolve(request))
    assert not state.exists()  # the hook had changed nothing here since boot
    state.mkdir(mode=0o500)
    assert steps_of(resolve(request))
    if os.geteuid() != 0:  # root writes anyway
        assert not (state / "profiles").exists()


def test_libvirts_call_on_a_fake_kernel_keeps_one_copy_per_domain(kernel):
    write_profile(GOVERNOR.replace("prepare/begin", "started/begin"), "other")
    write_profile(GOVERNOR.replace("prepare/begin", "started/begin"), "win10")
    os.makedirs(STATE, mode=0o700)
    for domain in ("other", "win10"):
        libvirt(kernel, "prepare", "begin", domain=domain)
    assert sorted(os.listdir(Path(STATE) / "profiles")) == ["other.cache", "win10.cache"]
    assert sorted(os.listdir(PROFILES)) == ["other.yaml", "win10.yaml"]
