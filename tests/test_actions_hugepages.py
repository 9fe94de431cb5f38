"""hugepages: reserve pages (a count or the domain's memory), compact and retry when the
kernel gives fewer, fail with how many it got, undo to the previous pool size."""

import shutil
from pathlib import Path

import pytest
from runs import LOG, hook
from toolbox import read, system_state

POOL_2M = "sys/kernel/mm/hugepages/hugepages-2048kB"
DOMAIN = """<domain type='kvm'><name>win10</name><memory unit='GiB'>16</memory>
<memoryBacking><hugepages/></memoryBacking></domain>"""


def pool(kernel, total: int, free: int) -> None:
    """Set the 2M pool as the kernel would show it with total - free pages in use."""
    Path(f"/host/{POOL_2M}/nr_hugepages").write_text(
        str(total)
    )  # through the kernel model: all free
    kernel.store.set_text(f"{POOL_2M[4:]}/free_hugepages", str(free))  # then a VM takes some
    kernel.writes.clear()


def test_reserves_a_count_and_release_returns_to_the_previous_size(kernel):
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile="prepare/begin:\n  - hugepages: 512\n")
    assert code == 0, err
    assert read(f"{POOL_2M}/nr_hugepages") == "512"
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert system_state(kernel) == start


def test_pages_in_use_by_others_are_not_counted(kernel):
    pool(kernel, total=600, free=88)  # 512 pages used by another VM
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - hugepages: {size: 2M, count: 512}\n",
    )
    assert code == 0, err
    assert read(f"{POOL_2M}/nr_hugepages") == "1024" and read(f"{POOL_2M}/free_hugepages") == "512"
    assert hook(kernel, "release", "end")[0] == 0
    assert read(f"{POOL_2M}/nr_hugepages") == "600"


def test_enough_free_pages_is_a_no_op(kernel):
    pool(kernel, total=1024, free=1024)
    code, _, err = hook(kernel, "prepare", "begin", profile="prepare/begin:\n  - hugepages: 512\n")
    assert code == 0, err
    assert kernel.writes == []
    assert (
        "1024 2M hugepages are free already (512 needed)   [nothing to do]" in Path(LOG).read_text()
    )


@pytest.mark.parametrize("size,pages", [("2M", 8192), ("1G", 16)])
def test_for_domain_sizes_the_pool_from_the_domain_memory(kernel, size, pages):
    kib = {"2M": 2048, "1G": 1048576}[size]
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile=f"prepare/begin:\n  - hugepages: {{size: {size}, for_domain: true}}\n",
        xml=DOMAIN,
    )
    assert code == 0, err
    assert read(f"sys/kernel/mm/hugepages/hugepages-{kib}kB/nr_hugepages") == str(pages)
    assert "warning" not in err


def test_for_domain_warns_when_the_domain_does_not_use_hugepages(kernel):
    xml = "<domain><name>win10</name><memory unit='KiB'>4194304</memory></domain>"
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - hugepages: {for_domain: true}\n",
        xml=xml,
    )
    assert code == 0, err
    assert read(f"{POOL_2M}/nr_hugepages") == "2048"
    assert (
        "no <memoryBacking><hugepages/>: QEMU will not use the reserved hugepages"
        in Path(LOG).read_text()
    )


def test_for_domain_without_xml_says_how_to_give_it(kernel):
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - hugepages: {for_domain: true}\n",
        xml="",
    )
    assert code == 1
    assert "for_domain needs the domain XML, which libvirt writes on stdin; none was given" in err


def test_fewer_pages_are_retried_after_compaction(kernel):
    kernel.hugepage_limits[2048] = 300
    kernel.compaction_gain[2048] = 100
    code, _, err = hook(kernel, "prepare", "begin", profile="prepare/begin:\n  - hugepages: 512\n")
    assert code == 0, err
    assert read(f"{POOL_2M}/nr_hugepages") == "512"
    assert [w[1] for w in kernel.writes] == ["512", "1", "512", "1", "512", "1", "512"]
    assert (
        "write 1 > /proc/sys/vm/compact_memory   [compact memory (300 of 512 2M pages)]"
        in Path(LOG).read_text()
    )


def test_too_few_pages_fail_with_the_count_and_the_pool_goes_back(kernel):
    kernel.hugepage_limits[2048] = 100
    kernel.compaction_gain[2048] = 10
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile="prepare/begin:\n  - hugepages: 512\n")
    assert code == 1
    assert (
        "the kernel gave 130 of the 512 2M hugepages asked for (130 in the pool after 4 tries with memory "
        "compaction); the pool is back to 0"
    ) in err
    assert "hugepagesz=2M hugepages=N" in err
    assert system_state(kernel) == start


def test_dry_run_shows_the_write(kernel):
    start = system_state(kernel)
    code, out, _ = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - hugepages: {size: 1G, for_domain: true}\n",
        dry_run=True,
        xml=DOMAIN,
    )
    assert code == 0, out
    assert "1. reserve 1G hugepages for the domain's memory" in out
    assert (
        "write 16 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages   [1G pages: 0 → 16]"
    ) in out
    assert system_state(kernel) == start


def test_a_page_size_the_host_lacks_is_named(kernel):
    shutil.rmtree("/host/sys/kernel/mm/hugepages/hugepages-1048576kB")
    code, _, err = hook(
        kernel, "prepare", "begin", profile="prepare/begin:\n  - hugepages: {size: 1G, count: 4}\n"
    )
    assert code == 1
    assert "this host has no 1G hugepages (no /sys/kernel/mm/hugepages/hugepages-1048576kB)" in err


@pytest.mark.parametrize(
    "step,message",
    [
        ("hugepages: {size: 1G}", "either count: N or for_domain: true"),
        ("hugepages: {count: 4, for_domain: true}", "either count: N or for_domain: true"),
        ("hugepages: {size: 4M, count: 4}", '"4M" is not one of 2M, 2MiB, 1G, 1GiB'),
        ("hugepages: 0", "0 is out of range"),
    ],
)
def test_arguments_are_validated(kernel, step, message):
    code, _, err = hook(kernel, "prepare", "begin", profile=f"prepare/begin:\n  - {step}\n")
    assert code == 2 and message in err, err


@pytest.mark.parametrize(
    "memory,kib",
    [
        ("<memory>4194304</memory>", 4194304),  # KiB by default
        ("<memory unit='MiB'>4096</memory>", 4194304),
        ("<memory unit='GB'>16</memory>", 15625000),  # decimal units round up to whole KiB
        ("<memory unit='bytes'>1025</memory>", 2),
    ],
)
def test_domain_memory_units(memory, kib):
    from passthrough.actions.hugepages import domain_memory_kib

    assert domain_memory_kib(f"<domain>{memory}</domain>") == (kib, False)


@pytest.mark.parametrize(
    "xml,message",
    [
        (
            "<domain><memory unit='parsecs'>1</memory></domain>",
            "<memory unit='parsecs'> is not a unit libvirt knows",
        ),
        ("<domain><name>x</name></domain>", "no <memory> with a number of KiB"),
        ("<domain><memory>", "the domain XML is not well-formed"),
        (
            '<!DOCTYPE d [<!ENTITY a "aaaa">]><domain><memory>&a;</memory></domain>',
            "document type declaration",
        ),
    ],
)
def test_domain_xml_problems_are_named(xml, message):
    from passthrough.actions.hugepages import domain_memory_kib
    from passthrough.errors import HostError

    with pytest.raises(HostError, match=message):
        domain_memory_kib(xml)
