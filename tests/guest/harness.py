"""Run a bash scenario inside a real Linux kernel booted under QEMU (TCG).

The guest is a throw-away q35 machine with an emulated Intel IOMMU and a
GPU-like two-function card, so scenarios can exercise the real kernel's PCI
sysfs (driver_override, unbind, drivers_probe, vfio-pci, resourceN_resize)
without touching the machine the tests run on.

Guest filesystem: a tiny cached initramfs (busybox-static + the virtio-9p
module chain) is the root; the host's /usr is mounted read-only over 9p and
/bin, /sbin, /lib, /lib64 point into it, so every host tool (bash, kmod,
python3, libvirt...) is available.  Shares:

    /project  the project directory, read-only        ($PROJECT)
    /out      results written by the scenario, kept    ($OUT)
    /harness  harness plumbing (scenario, output, exit status); do not use

Nothing of the host's /, /sys, /proc or /dev is ever exported.

A scenario reports through its exit status and output (GuestRun.returncode,
GuestRun.output) and through files it writes under $OUT (GuestRun.files).

Usage::

    run = run_in_guest('readlink /sys/bus/pci/devices/$GPU_VIDEO/driver')
    assert run.returncode == 0, run.output

The PCI addresses below are also exported to the scenario as environment
variables of the same name (GPU_VIDEO, GPU_AUDIO, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_REBAR_SRC = Path(__file__).resolve().parent / "rebar"

# --- Guest PCI topology (fixed; scenarios name these addresses) -------------
# Root port 00:02.0 -> bus 01: the GPU stand-in, one slot, two functions, so
# both functions land in one IOMMU group like a real graphics card.
GPU_ROOT_PORT = "0000:00:02.0"
GPU_VIDEO = "0000:01:00.0"  # bochs-display, driver bochs-drm, vendor:device 1234:1111
GPU_AUDIO = "0000:01:00.1"  # ich9-intel-hda + hda-output codec, driver snd_hda_intel
GPU_VIDEO_DRIVER = "bochs-drm"
GPU_AUDIO_DRIVER = "snd_hda_intel"

# Root port 00:03.0 -> bus 02, only with rebar=True: a virtio-gpu-pci
# (driver virtio-pci) whose BAR 4 gets an emulated Resizable BAR capability
# (rebar/rebar_emu.c, loaded by the guest init before the scenario starts).
# resource4_resize offers REBAR_SUPPORTED_MIB; the BAR starts at
# REBAR_DEFAULT_MIB.  Why this device: a ReBAR'd BAR has to be >= 1 MiB and,
# like a GPU's VRAM BAR, 64-bit prefetchable, or the kernel cannot grow the
# root port's (64-bit) prefetchable window; page-per-vq=on makes virtio's
# BAR 4 exactly that (8 MiB).  bochs-display's BAR 0 is 32-bit: ENOSPC.
REBAR_ROOT_PORT = "0000:00:03.0"
REBAR_DEVICE = "0000:02:00.0"
REBAR_DRIVER = "virtio-pci"
REBAR_BAR = 4
REBAR_DEFAULT_MIB = 8
REBAR_SUPPORTED_MIB = (8, 16, 32, 64, 128, 256)
# The same set as resourceN_resize shows it: bit n = 2^n MiB.
REBAR_SIZES_BITMAP = sum(1 << (mib.bit_length() - 1) for mib in REBAR_SUPPORTED_MIB)

# The guest's own virtio-9p devices (/usr, /project, harness share).
# Scenarios must never unbind, reset or pass these through.  Their driver is
# virtio-pci, like REBAR_DEVICE's: act on devices by address, never on every
# device of a driver (and never `modprobe -r virtio_pci`).
HARNESS_DEVICES = ("0000:00:10.0", "0000:00:11.0", "0000:00:12.0")

# no_timer_check: under TCG on a loaded machine the emulated timer misses the kernel's IO-APIC
# timer check ("IO-APIC + timer doesn't work!" panic, seen at load 9 on 2 cores); the check
# is for broken hardware and virtual machines routinely skip it.
KERNEL_ARGS = "console=ttyS0 panic=-1 no_timer_check"
IOMMU_KERNEL_ARGS = "intel_iommu=on iommu=pt"

PANIC_MARKER = "Kernel panic - not syncing"


# --- Errors -------------------------------------------------------------------
class GuestError(Exception):
    """Base class of everything run_in_guest raises."""


class GuestToolMissing(GuestError):
    """A host tool or package the guest tier needs is not installed."""


class GuestPanic(GuestError):
    """The guest kernel panicked."""


class GuestNoResult(GuestError):
    """The guest never reported a result (timeout, or QEMU/init died first)."""


@dataclasses.dataclass(frozen=True)
class GuestRun:
    returncode: int
    output: str  # scenario stdout + stderr, interleaved
    console: str  # serial console (kernel log at boot, init messages)
    dmesg: str  # full kernel log, saved after the scenario finished
    duration: float  # wall-clock seconds from QEMU start to exit
    files: dict[str, bytes]  # everything the scenario wrote under $OUT, by relative path

    def text(self, name: str) -> str:
        """A file the scenario wrote to $OUT/<name>, decoded as UTF-8."""
        return self.files[name].decode()


# --- Guest init (PID 1) ---------------------------------------------------------
# Any failure before the scenario runs is printed to the console and the guest
# powers off without a result, which run_in_guest reports as GuestNoResult
# together with the console tail.
_INIT = r"""#!/busybox sh
# Until /usr is mounted the only tool is busybox; afterwards the host's.
B=/busybox
die() {
    echo "harness-init: $* failed"
    $B sync
    $B poweroff -f
}
$B mount -t proc proc /proc || die "mount /proc"
$B mount -t sysfs sysfs /sys || die "mount /sys"
$B mount -t devtmpfs devtmpfs /dev || die "mount /dev"
# What udev would add; bash needs /dev/fd for process substitution.
$B ln -s /proc/self/fd /dev/fd
for n in 0:stdin 1:stdout 2:stderr; do $B ln -s fd/${n%:*} /dev/${n#*:}; done
for m in $($B cat /modules/order); do
    $B insmod "/modules/$m" || die "insmod $m"
done
# Read-only 9p shares can cache freely; the read-write one must not, so that
# the host sees every byte the guest wrote before it powers off.
P9=trans=virtio,version=9p2000.L,msize=512000
$B mount -t 9p -o $P9,ro,cache=loose usr /usr || die "mount /usr"
for d in bin sbin lib lib64; do $B ln -s usr/$d /$d; done
export PATH=/usr/sbin:/usr/bin
mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /run || die "mount tmpfs"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm || die "mount /dev/pts, /dev/shm"
mount -t 9p -o $P9,ro,cache=loose project /project || die "mount /project"
mount -t 9p -o $P9 harness /harness || die "mount /harness"
mount --bind /harness/out /out || die "mount /out"
echo "root:x:0:0:root:/root:/bin/bash" >/etc/passwd
echo "root:x:0:" >/etc/group
# No udev here: load the drivers of every PCI device present (coldplug).
modprobe -ab $(cat /sys/bus/pci/devices/*/modalias)
if [ -e /harness/rebar_emu.ko ]; then
    insmod /harness/rebar_emu.ko $(cat /harness/rebar_emu.args) || die "insmod rebar_emu.ko"
fi
cd /tmp
env -i $(cat /harness/env) PROJECT=/project OUT=/out HOME=/root \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /usr/bin/bash /harness/scenario.sh </dev/null >/harness/output 2>&1
rc=$?
dmesg >/harness/dmesg
echo $rc >/harness/returncode
sync
# Not /usr/sbin/poweroff: on the host that may be systemctl.
$B poweroff -f
"""

# Mount points and directories of the RAM root; everything else comes from /usr.
_ROOT_DIRS = (
    "proc",
    "sys",
    "dev",
    "usr",
    "tmp",
    "run",
    "etc",
    "root",
    "var",
    "project",
    "out",
    "harness",
    "modules",
)

# The virtio-9p chain; order comes from `modprobe --show-depends`.
_INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p")


# --- Host prerequisites ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Kernel:
    version: str
    image: Path

    @property
    def headers(self) -> Path:
        return Path("/usr/src") / f"linux-headers-{self.version}"


def _require_tool(name: str, package: str) -> str:
    path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", ""))
    if not path:
        raise GuestToolMissing(f"{name} not found: install the Debian package {package}")
    return path


def _find_kernel() -> _Kernel:
    def version_key(image: Path) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", image.name)]

    for image in sorted(Path("/boot").glob("vmlinuz-*"), key=version_key, reverse=True):
        version = image.name.removeprefix("vmlinuz-")
        if not (Path("/usr/lib/modules") / version / "modules.dep").exists():
            continue
        if not os.access(image, os.R_OK):
            raise GuestToolMissing(f"{image} is not readable by this user")
        return _Kernel(version, image)
    raise GuestToolMissing(
        "no /boot/vmlinuz-* with modules in /usr/lib/modules: install linux-image-amd64"
    )


def _is_static_elf(path: Path) -> bool:
    """True if the 64-bit ELF file has no program interpreter (PT_INTERP)."""
    with path.open("rb") as f:
        header = f.read(64)
        if header[:5] != b"\x7fELF\x02":
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def _find_busybox() -> Path:
    busybox = Path("/usr/bin/busybox")
    if not busybox.exists() or not _is_static_elf(busybox):
        raise GuestToolMissing("no static /usr/bin/busybox: install busybox-static")
    return busybox


# --- Cached artefacts ------------------------------------------------------------
def cache_dir() -> Path:
    """Where boot images, initramfs and modules are cached between runs.

    $PASSTHROUGH_GUEST_CACHE, else $XDG_CACHE_HOME/passthrough-hook-tests.
    Entries are keyed on their inputs, so the directory never needs cleaning
    for correctness; delete it to reclaim space.
    """
    explicit = os.environ.get("PASSTHROUGH_GUEST_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "passthrough-hook-tests"


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _publish(tmp: Path, final: Path) -> Path:
    """Atomically move a freshly built artefact into the cache (safe when
    several test processes build the same entry at once)."""
    os.replace(tmp, final)
    return final


def _boot_image(kernel: _Kernel, cache: Path) -> Path:
    """The uncompressed vmlinux inside vmlinuz, if it can be extracted.

    QEMU boots an ELF vmlinux through its PVH entry point, which skips the
    in-guest decompression: ~2.5 s less per boot under TCG (~3.5 s vs ~6 s).  Falls back
    to the bzImage for kernels without PVH or not xz-compressed.
    """
    target = cache / f"vmlinux-{kernel.version}-{_digest(_stat_key(kernel.image))}"
    if target.exists():
        return target
    config = Path("/boot") / f"config-{kernel.version}"
    if not config.exists() or "\nCONFIG_PVH=y\n" not in config.read_text():
        return kernel.image
    data = kernel.image.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        return kernel.image
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    except lzma.LZMAError:
        return kernel.image
    if not elf.startswith(b"\x7fELF"):
        return kernel.image
    tmp = cache / f".{target.name}.{os.getpid()}"
    tmp.write_bytes(elf)
    return _publish(tmp, target)


def _module_chain(kernel: _Kernel) -> list[Path]:
    modprobe = _require_tool("modprobe", "kmod")
    chain: list[Path] = []
    for name in _INITRAMFS_MODULES:
        shown = subprocess.run(
            [modprobe, "-S", kernel.version, "--show-depends", name], capture_output=True, text=True
        )
        if shown.returncode != 0:
            raise GuestToolMissing(
                f"modprobe cannot resolve {name} for {kernel.version}: {shown.stderr.strip()} "
                f"(install linux-image-{kernel.version})"
            )
        for line in shown.stdout.splitlines():
            words = line.split()
            # "insmod /lib/modules/.../x.ko" or "builtin x" (nothing to load).
            if words and words[0] == "insmod":
                path = Path(words[1])
                if path not in chain:
                    chain.append(path)
    return chain


def _initramfs(kernel: _Kernel, cache: Path) -> Path:
    cpio = _require_tool("cpio", "cpio")
    busybox = _find_busybox()
    modules = _module_chain(kernel)
    key = _digest(_INIT, _stat_key(busybox), *map(_stat_key, modules))
    target = cache / f"initramfs-{kernel.version}-{key}.cpio"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as stage_dir:
        stage = Path(stage_dir) / "root"
        for d in _ROOT_DIRS:
            (stage / d).mkdir(parents=True)
        shutil.copy2(busybox, stage / "busybox")
        (stage / "init").write_text(_INIT)
        (stage / "init").chmod(0o755)
        order = []
        for i, module in enumerate(modules):
            name = f"{i:02d}-{module.name}"
            shutil.copy2(module, stage / "modules" / name)
            order.append(name)
        (stage / "modules" / "order").write_text("\n".join(order) + "\n")
        files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
        tmp = Path(stage_dir) / "initramfs.cpio"
        with tmp.open("wb") as out:
            subprocess.run(
                [cpio, "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                input="\n".join(files).encode(),
                cwd=stage,
                stdout=out,
                check=True,
            )
        return _publish(tmp, target)


def _rebar_module(kernel: _Kernel, cache: Path) -> Path:
    """rebar_emu.ko built against the guest kernel's headers (cached)."""
    hint = f"install linux-headers-{kernel.version} (linux-headers-amd64), gcc and make"
    if not (kernel.headers / "Makefile").exists():
        raise GuestToolMissing(f"{kernel.headers} missing: {hint}")
    make = _require_tool("make", "make")
    _require_tool("gcc", "gcc")
    sources = sorted(p for p in _REBAR_SRC.iterdir() if p.is_file())
    key = _digest(
        kernel.version,
        _stat_key(kernel.headers / "Module.symvers"),
        *(p.name.encode() + p.read_bytes() for p in sources),
    )
    target = cache / f"rebar_emu-{kernel.version}-{key}.ko"
    if target.exists():
        return target
    # Build in a scratch copy: Kbuild litters its source directory.
    with tempfile.TemporaryDirectory(dir=cache) as build:
        for p in sources:
            shutil.copy2(p, build)
        made = subprocess.run(
            [make, "-C", build, f"KDIR={kernel.headers}"], capture_output=True, text=True
        )
        if made.returncode != 0:
            raise GuestError(f"building rebar_emu.ko failed:\n{made.stdout}\n{made.stderr}")
        return _publish(Path(build) / "rebar_emu.ko", target)


# --- QEMU -----------------------------------------------------------------------
def _qemu_command(
    qemu: str,
    kernel_image: Path,
    initrd: Path,
    console: Path,
    project_dir: Path,
    share: Path,
    *,
    iommu: bool,
    rebar: bool,
) -> list[str]:
    append = KERNEL_ARGS + (" " + IOMMU_KERNEL_ARGS if iommu else "")
    cmd = [
        qemu,
        "-machine",
        "q35,accel=tcg",
        "-cpu",
        "max",
        "-m",
        "1024",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(kernel_image),
        "-initrd",
        str(initrd),
        "-append",
        append,
        "-serial",
        f"file:{console}",
    ]
    if iommu:
        # Must precede every PCI device.  caching-mode=on lets a nested QEMU
        # inside the guest assign devices through vfio.
        cmd += ["-device", "intel-iommu,caching-mode=on"]
    cmd += [
        "-device",
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2",
        "-device",
        "bochs-display,id=gpu,bus=rp1,addr=0x0.0,multifunction=on",
        "-device",
        "ich9-intel-hda,id=hda,bus=rp1,addr=0x0.1",
        "-audiodev",
        "none,id=snd0",
        "-device",
        "hda-output,bus=hda.0,audiodev=snd0",
    ]
    if rebar:
        cmd += [
            "-device",
            "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2,addr=0x3",
            "-device",
            "virtio-gpu-pci,id=rebar,bus=rp2,addr=0x0,page-per-vq=on",
        ]
    shares = (
        ("usr", Path("/usr"), True),
        ("project", project_dir, True),
        ("harness", share, False),
    )
    for (tag, path, readonly), address in zip(shares, HARNESS_DEVICES, strict=False):
        slot = address.split(":")[2]  # "10.0"
        qemu_path = str(path).replace(",", ",,")  # QEMU option syntax
        cmd += [
            "-fsdev",
            f"local,id=fs_{tag},path={qemu_path},security_model=none"
            + (",readonly=on" if readonly else ""),
            "-device",
            f"virtio-9p-pci,fsdev=fs_{tag},mount_tag={tag},bus=pcie.0,addr={slot}",
        ]
    return cmd


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _read_tree(root: Path) -> dict[str, bytes]:
    """Regular files under root by relative path.  Symlinks are skipped: the
    guest created them, they would resolve on the host."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                files[str(path.relative_to(root))] = path.read_bytes()
    return dict(sorted(files.items()))


@contextlib.contextmanager
def _run_directory(run_dir: Path | None):
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        yield run_dir
    else:
        with tempfile.TemporaryDirectory(prefix="guest-run-") as tmp:
            yield Path(tmp)


# Exported to every scenario (values must not contain whitespace).
_SCENARIO_ENV = {
    "GPU_ROOT_PORT": GPU_ROOT_PORT,
    "GPU_VIDEO": GPU_VIDEO,
    "GPU_AUDIO": GPU_AUDIO,
    "GPU_VIDEO_DRIVER": GPU_VIDEO_DRIVER,
    "GPU_AUDIO_DRIVER": GPU_AUDIO_DRIVER,
    "REBAR_ROOT_PORT": REBAR_ROOT_PORT,
    "REBAR_DEVICE": REBAR_DEVICE,
    "REBAR_DRIVER": REBAR_DRIVER,
    "REBAR_BAR": str(REBAR_BAR),
    "HARNESS_DEVICES": ",".join(HARNESS_DEVICES),
}


def run_in_guest(
    script: str,
    *,
    iommu: bool = True,
    rebar: bool = False,
    timeout: float = 180,
    project_dir: Path = REPO_ROOT,
    run_dir: Path | None = None,
) -> GuestRun:
    """Boot the guest, run `script` with /usr/bin/bash inside it, power off.

    iommu     emulate an Intel IOMMU (intel_iommu=on iommu=pt); without it
              vfio-pci cannot bind anything.
    rebar     add REBAR_DEVICE and load rebar_emu.ko before the scenario.
    timeout   seconds QEMU may run (boot + scenario + poweroff); it is
              killed when they run out.  Building cached artefacts is extra.
    run_dir   keep console log, QEMU log and $OUT there (e.g. pytest's
              tmp_path); by default a temporary directory is used and removed.

    The scenario runs as root with PROJECT=/project OUT=/out, the PCI address
    constants of this module, and PATH=/usr/sbin:/usr/bin:/sbin:/bin.
    Raises GuestToolMissing, GuestPanic or GuestNoResult; a failing scenario is
    not an exception, check GuestRun.returncode.
    """
    qemu = _require_tool("qemu-system-x86_64", "qemu-system-x86")
    kernel = _find_kernel()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    kernel_image = _boot_image(kernel, cache)
    initrd = _initramfs(kernel, cache)
    module = _rebar_module(kernel, cache) if rebar else None

    with _run_directory(run_dir) as rd:
        share = rd / "guest"  # /harness inside the guest
        out_dir = share / "out"  # /out
        if share.exists():
            shutil.rmtree(share)
        out_dir.mkdir(parents=True)
        (share / "scenario.sh").write_text(script)
        (share / "env").write_text("".join(f"{k}={v}\n" for k, v in _SCENARIO_ENV.items()))
        if module is not None:
            shutil.copy2(module, share / "rebar_emu.ko")
            (share / "rebar_emu.args").write_text(
                f"addr={REBAR_DEVICE} bar={REBAR_BAR} sizes={REBAR_SIZES_BITMAP:#x}\n"
            )
        console_path = rd / "console.log"
        qemu_log = rd / "qemu.log"
        console_path.write_text("")  # read below even if QEMU never starts
        cmd = _qemu_command(
            qemu,
            kernel_image,
            initrd,
            console_path,
            project_dir.resolve(),
            share,
            iommu=iommu,
            rebar=rebar,
        )

        started = time.monotonic()
        timed_out = False
        with qemu_log.open("wb") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # Also reached on KeyboardInterrupt: never leave QEMU behind.
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        duration = time.monotonic() - started

        console = console_path.read_text(errors="replace")
        if PANIC_MARKER in console:
            # The panic's own line says why ("... not syncing: sysrq triggered crash"); the
            # tail may not reach it, as a long backtrace follows.
            reason = next(line for line in console.splitlines() if PANIC_MARKER in line)
            raise GuestPanic(
                f"guest kernel panicked after {duration:.1f} s ({reason.strip()}); console "
                f"tail:\n{_tail(console)}"
            )
        status = share / "returncode"
        if not status.exists():
            if timed_out:
                why = f"timed out after {timeout:.0f} s (QEMU killed)"
            else:
                why = (
                    f"QEMU exited with status {proc.returncode} after {duration:.1f} s;"
                    f" QEMU said:\n{_tail(qemu_log.read_text(errors='replace'), 10)}"
                )
            raise GuestNoResult(
                f"guest never reported a result: {why}\nconsole tail:\n{_tail(console)}"
            )
        files = _read_tree(out_dir)
        return GuestRun(
            returncode=int(status.read_text()),
            output=(share / "output").read_text(errors="replace"),
            console=console,
            dmesg=(share / "dmesg").read_text(errors="replace"),
            duration=duration,
            files=files,
        )
