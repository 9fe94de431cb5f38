"""Profile validation: every mistake gets FILE:LINE:COL and what was expected."""

import pytest

from passthrough.actions.resize_bar import ResizeBarArgs
from passthrough.errors import ProfileError
from passthrough.profile import MAX_BYTES, is_plain_name, parse_profile

GOOD = b"""\
devices:
  gpu: "0000:03:00.0"
  gpu-audio: "0000:03:00.1"
prepare/begin:
  - modprobe: [vfio, vfio_iommu_type1, vfio_pci]
  - detach: [gpu, gpu-audio]
  - resize_bar: {device: gpu, bar: 2, size: 8MiB}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        parse_profile(text.encode(), "win10.yaml")
    return info.value.problems


def test_seed_profile_loads():
    profile = parse_profile(GOOD, "win10.yaml")
    assert profile.devices == {"gpu": "0000:03:00.0", "gpu-audio": "0000:03:00.1"}
    steps = profile.events["prepare/begin"]
    assert [s.action.name for s in steps] == ["modprobe", "detach", "resize_bar"]
    assert str(steps[2].where) == "win10.yaml:7:5"
    assert steps[2].action.params == ResizeBarArgs(device="0000:03:00.0", bar=2, size=3)
    assert steps[1].action.params.via == "libvirt"
    assert "release/end" not in profile.events


@pytest.mark.parametrize(
    "text,expected",
    [
        # a typo in an action name, with a suggestion
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detatch: [gpu]\n',
            'win10.yaml:3:5: unknown action "detatch" (did you mean "detach"?); expected one of modprobe, detach',
        ),
        # a bad address
        (
            'devices:\n  gpu: "0000:03:00"\n',
            "win10.yaml:2:8: '0000:03:00' is not a PCI address; expected DDDD:BB:DD.F",
        ),
        # an unknown device name
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu, gpu-audio]\n',
            'win10.yaml:3:19: unknown device "gpu-audio"; devices: gpu',
        ),
        # an unknown event
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/start:\n  - detach: gpu\n',
            'win10.yaml:2:1: unknown key "prepare/start" (did you mean "prepare/begin"?)',
        ),
        # a bad BAR size
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - resize_bar: {device: gpu, bar: 2, size: 3MiB}\n',
            "win10.yaml:3:45: '3MiB' is not a power of two in MiB",
        ),
        # wrong types
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - resize_bar: {device: gpu, bar: two, size: 8MiB}\n',
            'win10.yaml:3:36: expected a BAR number, got the string "two"',
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin: detach\n',
            "win10.yaml:2:16: prepare/begin must be a list of steps",
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: {devices: [gpu], via: virsh}\n',
            'win10.yaml:3:35: "virsh" is not one of libvirt, sysfs',
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n    via: sysfs\n',
            'win10.yaml:4:5: "via" is an argument of detach, not of the step',
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n    timeout: -1\n',
            "win10.yaml:4:14: expected a number of seconds between 0 and 3600",
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: {devices: [gpu], via: libvirt, driver: pci-stub}\n',
            "win10.yaml:3:13: libvirt detaches to vfio-pci only; for pci-stub use via: sysfs",
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nrelease/end:\n  - undo: prepare/begun\n',
            'win10.yaml:3:11: unknown event "prepare/begun" (did you mean "prepare/begin"?)',
        ),
        (
            'devices:\n  gpu: "0000:03:00.0"\n  gpu: "0000:03:00.1"\n',
            'win10.yaml:3:3: duplicate key "gpu" in devices (first at line 2)',
        ),
        (
            'devices:\n  gpu: "0000:03:00.0"\n  vga: "03:00.0"\n',
            'win10.yaml:3:8: 0000:03:00.0 is already named "gpu"',
        ),
        ("devices: [\n", "win10.yaml:2:1: invalid YAML"),
        ("a: &x [1]\nb: *x\n", "win10.yaml:1:4: anchors and aliases"),
        ("", "win10.yaml:1:1: the profile is empty"),
        ("- detach\n", "win10.yaml:1:1: the profile must be a mapping, got a list"),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - modprobe: {load: [vfio], remove: [nouveau]}\n',
            "win10.yaml:3:15: modprobe takes either a list of modules to load or {remove: [...]}, not both",
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - bind: {driver: vfio-pci}\n',
            "win10.yaml:3:11: bind needs `device: name` or `devices: [names]`",
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n    unbind: [gpu]\n',
            "win10.yaml:4:5: step 1 of prepare/begin names several actions (detach, unbind)",
        ),
    ],
)
def test_errors_point_at_the_mistake(text, expected):
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_every_problem_is_reported_at_once():
    found = problems(
        'devices:\n  gpu: "zz"\nprepare/begin:\n  - detach: [gpu]\n  - frobnicate: 1\n'
    )
    assert [p.split(":")[1] for p in found] == ["2", "4", "5"]


def test_alias_bomb_is_refused_without_expanding():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    assert "anchors and aliases" in problems(bomb)[0]


def test_deep_nesting_is_refused():
    assert "nested deeper than" in problems("a: " + "[" * 200 + "]" * 200 + "\n")[0]


def test_huge_and_binary_files(tmp_path):
    from passthrough.profile import load_profile

    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(ProfileError, match="larger than"):
        load_profile(big)
    with pytest.raises(ProfileError, match="not UTF-8"):
        parse_profile(b"devices: {}\n\xff\xfe", "x.yaml")


def test_empty_release_means_do_nothing():
    profile = parse_profile(b'devices: {gpu: "0000:03:00.0"}\nrelease/end:\n', "x.yaml")
    assert profile.events["release/end"] == ()


@pytest.mark.parametrize(
    "name,ok",
    [
        ("win10", True),
        ("my vm", True),
        ("../etc/x", False),
        (".hidden", False),
        ("a/b", False),
        ("a\x00b", False),
        ("", False),
        ("a\nb", False),
    ],
)
def test_plain_domain_names(name, ok):
    assert is_plain_name(name) is ok
