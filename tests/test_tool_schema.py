"""The JSON Schema shipped for editors says what the validator says."""

import json

import jsonschema
import pytest
import yaml
from runs import command
from tool_trees import REPO

from passthrough.errors import ProfileError
from passthrough.profile import parse_profile
from passthrough.tools.profile_schema import render

SHIPPED = REPO / "passthrough" / "profile.schema.json"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SHIPPED.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_shipped_schema_is_the_generated_one():
    assert SHIPPED.read_text() == render(), (
        "regenerate with: python3 -m passthrough schema > passthrough/profile.schema.json"
    )
    assert command("schema") == (0, render(), "")


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_example_profiles_name_the_shipped_schema_and_pass_it(validator, example):
    text = (REPO / "config" / example).read_text()
    assert (
        text.splitlines()[0] == "# yaml-language-server: $schema=../passthrough/profile.schema.json"
    )
    parse_profile(text.encode(), example)
    assert list(validator.iter_errors(yaml.safe_load(text))) == []


GOOD = [
    'devices: {gpu: "0000:03:00.0", gpu-audio: "03:00.1"}\n'
    "prepare/begin:\n  - modprobe: [vfio_pci]\n  - detach: {devices: [gpu, gpu-audio], via: sysfs}\n"
    "    timeout: 30\n  - resize_bar: {device: gpu, bar: 2, size: 8MiB}\n"
    "  - resize_bar: {device: gpu, bar: 0, size: 8}\n"
    "release/end:\n  - undo: prepare/begin\n  - modprobe: {remove: [vfio_pci]}\n    force: true\n",
    'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - bind: {device: gpu, driver: vfio-pci}\n'
    "  - unbind: gpu\n  - reattach: [gpu]\nrelease/end:\n",
]
BAD = [
    ('devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detatch: [gpu]\n', "unknown action"),
    ('devices: {gpu: "0000:3:00.0"}\n', "not a PCI address"),
    ('devices: {gpu: "0000:03:00.0"}\nprepare/start:\n  - detach: [gpu]\n', "unknown key"),
    (
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - resize_bar: {device: gpu, bar: 7, size: 8MiB}\n',
        "out of range",
    ),
    (
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - resize_bar: {device: gpu, bar: 2}\n',
        'needs "size"',
    ),
    (
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: {devices: [gpu], via: virsh}\n',
        "is not one of libvirt, sysfs",
    ),
    (
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n    timeout: 0\n',
        "between 0 and 3600",
    ),
    (
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n    retries: 3\n',
        "unknown step option",
    ),
    ('devices: {1gpu: "0000:03:00.0"}\n', "is not a device name"),
    (
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n    unbind: [gpu]\n',
        "several actions",
    ),
    (
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - undo: prepare/begin\n  - detach: []\n',
        "empty list",
    ),
]


@pytest.mark.parametrize("text", GOOD)
def test_profiles_the_validator_accepts_pass_the_schema(validator, text):
    parse_profile(text.encode(), "good.yaml")
    assert list(validator.iter_errors(yaml.safe_load(text))) == []


@pytest.mark.parametrize("text,problem", BAD)
def test_profiles_the_validator_rejects_fail_the_schema(validator, text, problem):
    with pytest.raises(ProfileError) as caught:
        parse_profile(text.encode(), "bad.yaml")
    assert problem in str(caught.value)
    assert list(validator.iter_errors(yaml.safe_load(text))) != []


def test_profiles_init_writes_pass_the_schema(validator, tmp_path):
    code, _, _ = command(
        "init",
        "--root",
        REPO / "config/demo-host",
        "--config-dir",
        tmp_path,
        "--xml",
        REPO / "config/win10.xml",
        "win10",
    )
    assert code == 0
    assert list(validator.iter_errors(yaml.safe_load((tmp_path / "win10.yaml").read_text()))) == []
