"""Random and hostile input: profiles and argv. The answer is always a clear error (exit 2)
or a valid result, never a traceback, never a write to the host."""

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runs import command

from passthrough.errors import ProfileError
from passthrough.profile import parse_profile

GOOD = """\
devices:
  gpu: "0000:03:00.0"
  gpu-audio: "0000:03:00.1"
prepare/begin:
  - modprobe: [vfio, vfio_iommu_type1, vfio_pci]
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
  - resize_bar: {device: gpu, bar: 2, size: 8MiB}
  - bind: {device: gpu, driver: vfio-pci}
    timeout: 5
release/end:
  - undo: prepare/begin
"""

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        ["gpu", "0000:03:00.0", "8MiB", "prepare/begin", "detach", "vfio_pci", "sysfs", "libvirt"]
    ),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.one_of(
                st.text(max_size=15),
                st.sampled_from(
                    [
                        "devices",
                        "prepare/begin",
                        "release/end",
                        "detach",
                        "modprobe",
                        "resize_bar",
                        "bind",
                        "undo",
                        "device",
                        "devices",
                        "bar",
                        "size",
                        "via",
                        "driver",
                        "timeout",
                        "force",
                        "remove",
                        "load",
                    ]
                ),
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=40,
)


def outcome(data: bytes) -> str:
    try:
        parse_profile(data, "fuzz.yaml")
    except ProfileError as exc:
        assert exc.problems and all(p.startswith("fuzz.yaml:") for p in exc.problems), exc.problems
        return "error"
    return "ok"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_binary_garbage(data):
    outcome(data)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_random_documents(document):
    outcome(yaml.safe_dump(document, allow_unicode=True).encode())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_good_profile(data):
    text = GOOD
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text)))
        insert = data.draw(st.text(alphabet=string.printable + "\u00e9\u2603\x00", max_size=6))
        cut = data.draw(st.integers(0, 4))
        text = text[:position] + insert + text[position + cut :]
    outcome(text.encode("utf-8", errors="surrogatepass"))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 60), st.sampled_from(["[", "{a: ", "- "]))
def test_deep_nesting(depth, opener):
    closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
    text = (
        ("a: " + opener * depth + "1" + closer * depth)
        if opener != "- "
        else "".join("  " * i + "- \n" for i in range(depth))
    )
    outcome(text.encode())


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.integers(2, 9))
def test_alias_bombs(width, depth):
    lines = ["a0: &a0 [x]"]
    for level in range(1, depth):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    assert outcome("\n".join(lines).encode()) == "error"


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252"]))
def test_wrong_encodings(encoding):
    data = ("# caf\u00e9 \u00fc\n" + GOOD).encode(encoding, errors="replace")
    outcome(data)


argv_words = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "--dry-run",
            "--json",
            "--root",
            "/host",
            "--config-dir",
            "/profiles",
            "--state-dir",
            "--xml",
            "win10",
            "prepare",
            "begin",
            "release",
            "end",
            "-",
            "validate",
            "recover",
            "--help",
            "../x",
            ".x",
        ]
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(argv_words, max_size=8))
def test_random_argv_never_writes_or_crashes(kernel, argv):
    """A profile exists for win10 but names a device typo, so any run that reaches it must
    stop at validation."""
    import os

    os.makedirs("/profiles", exist_ok=True)
    with open("/profiles/win10.yaml", "w") as handle:
        handle.write('devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu0]\n')
    before = kernel.snapshot()
    writes = len(kernel.writes)
    code, out, err = command(*argv, kernel=kernel)
    text = out + err
    assert code in (0, 1, 2), (argv, code, text)
    assert "Traceback" not in text
    assert len(kernel.writes) == writes and kernel.snapshot() == before
