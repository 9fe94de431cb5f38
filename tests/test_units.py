import pytest

from passthrough.units import (
    format_bytes,
    format_mib,
    nodedev_name,
    parse_bar_size,
    parse_pci_address,
)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0000:03:00.0", "0000:03:00.0"),
        ("03:00.1", "0000:03:00.1"),
        ("0000:0A:1F.7", "0000:0a:1f.7"),
    ],
)
def test_pci_addresses(text, expected):
    assert parse_pci_address(text) == expected


@pytest.mark.parametrize(
    "text", ["0000:03:00", "3:00.0", "0000:03:20.0", "0000:03:00.8", "gpu", ""]
)
def test_bad_pci_addresses(text):
    with pytest.raises(ValueError, match="expected DDDD:BB:DD.F"):
        parse_pci_address(text)


@pytest.mark.parametrize(
    "value,exponent",
    [
        ("8MiB", 3),
        ("8M", 3),
        ("256M", 8),
        ("1GiB", 10),
        ("16G", 14),
        ("1MiB", 0),
        (3, 3),
        ("2 GiB", 11),
    ],
)
def test_bar_sizes(value, exponent):
    assert parse_bar_size(value) == exponent


@pytest.mark.parametrize(
    "value,message",
    [
        ("3MiB", "power of two"),
        ("512K", "smallest"),
        ("8 bytes", "not a BAR size"),
        (64, "out of range"),
        (-1, "out of range"),
        ("8iB", "not a BAR size"),
        (True, "not a BAR size"),
    ],
)
def test_bad_bar_sizes(value, message):
    with pytest.raises(ValueError, match=message):
        parse_bar_size(value)


def test_formatting():
    assert format_mib(8) == "8 MiB"
    assert format_mib(16384) == "16 GiB"
    assert format_bytes(256 << 20) == "256 MiB"
    assert format_bytes(16384) == "16 KiB"
    assert nodedev_name("0000:03:00.1") == "pci_0000_03_00_1"
