"""The README's section on the profile-writing commands shows their current output."""

import re

from runs import command
from tool_trees import REPO

README = (REPO / "README.md").read_text()
DRAFT_PROFILE = """\
devices:
  gpu: "0000:03:00.0"
prepare/begin:
  - modprobe: [vfio, vfio_iommu_type1, vfio_pci]
  - detach: [gpu]
  - resize_bar: {device: gpu, bar: 0, size: 8MiB}
"""


def shown(command: str) -> str:
    """The output the README shows under `$ command`."""
    start = README.index(f"$ {command}\n") + len(command) + 3
    return README[start : README.index("\n```", start)] + "\n"


def test_init_output(tmp_path):
    code, out, _ = command(
        "init",
        "--root",
        "config/demo-host",
        "--config-dir",
        tmp_path / "profiles",
        "--xml",
        "config/win10.xml",
        "win10",
    )
    assert code == 0
    out = out.replace(str(tmp_path), "/tmp").replace(str(REPO), "/work/main")
    expected = shown(
        "passthrough-hook init --root config/demo-host --config-dir /tmp/profiles "
        "--xml config/win10.xml win10"
    )
    assert out.split() == expected.split(), (
        "paste the new output into README.md"
    )  # wrapping depends on the path


def test_check_output_of_the_draft(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles/win10.yaml").write_text(DRAFT_PROFILE)
    xml = (
        (REPO / "config/win10.xml")
        .read_text()
        .replace("      <vendor_id state='on' value='0123456789ab'/>\n", "")
    )
    xml = re.sub(
        r"    <hostdev[^\n]*\n      <source>\n        <address [^\n]*function='0x1'/>.*?</hostdev>\n",
        "",
        xml,
        flags=re.S,
    )
    (tmp_path / "win10.xml").write_text(xml)
    code, out, _ = command(
        "check",
        "--root",
        "config/demo-host",
        "--config-dir",
        tmp_path / "profiles",
        "--xml",
        tmp_path / "win10.xml",
        "win10",
    )
    out = out.replace(str(tmp_path), "/tmp/draft") + f"(exit status {code})\n"
    expected = shown(
        "passthrough-hook check --root config/demo-host --config-dir /tmp/draft/profiles "
        "--xml /tmp/draft/win10.xml win10"
    )
    assert out.split() == expected.split(), (
        "paste the new output into README.md"
    )  # wrapping depends on the path


def test_snapshot_and_status_output(tmp_path):
    copy = tmp_path / "demo-copy"
    code, out, _ = command("snapshot", "--root", "config/demo-host", copy)
    assert code == 0
    out += command("status", "--root", copy)[1]
    expected = shown("passthrough-hook snapshot --root config/demo-host /tmp/demo-copy")
    assert out.replace(str(tmp_path), "/tmp") == expected.replace(
        "$ passthrough-hook status --root /tmp/demo-copy\n", ""
    )


def test_iommu_output():
    """The demo tree carries the pci.ids lines of its devices, so the names are the README's
    on any machine, with or without a pci.ids of its own."""
    code, out, _ = command("iommu", "--root", "config/demo-host")
    assert code == 0
    assert out == shown("passthrough-hook iommu --root config/demo-host")


def test_no_path_of_a_test_machine_or_tree_in_the_readme():
    for marker in ("/work/", "/host/", "/tmp/tmp", "pytest-of-", str(REPO)):
        assert marker not in README, marker


def test_the_grammar_errors_shown_are_current():
    code, _, err = command("chekc", "win10", "prepare", "begin")
    assert code == 2 and err in shown("passthrough-hook chekc win10 prepare begin")
    code, _, err = command(
        "--dry-run",
        "--root",
        "config/demo-host",
        "--config-dir",
        "config",
        "win10",
        "preapre",
        "begin",
    )
    assert code == 2 and err.strip() in README
