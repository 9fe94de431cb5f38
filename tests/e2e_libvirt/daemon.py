"""A real libvirtd for tests: started as systemd would start it, the host put back afterwards.

`running_libvirtd(work_dir)` is the whole life cycle (tests/e2e_libvirt/conftest.py wraps it in a
session fixture; a benchmark can use it directly):

1. refuse to run if libvirt is missing, we are not root, a libvirtd we did not start is
   already serving (never take over or kill someone else's daemon) or qemu.conf already sets
   cgroup_controllers;
2. snapshot the whole of /etc/libvirt: besides the changes below and whatever tests write
   there (hooks, domain XML), libvirtd itself rewrites files on its first start (it adds UUIDs
   to nwfilter/*.xml and qemu/networks/default.xml and creates secrets/);
3. set `cgroup_controllers = [ ]` (without systemd, libvirtd would otherwise create cgroups
   under /sys/fs/cgroup), empty hooks/ (a hook already installed on this host must not run for
   test domains) and every autostart/ directory (the daemon must not start guests or networks
   by itself);
4. start virtlogd (unless one already serves) and libvirtd with systemd's clean environment;
5. at the end: destroy and undefine the test domains, stop exactly the daemons started here
   (by pid), restore /etc/libvirt to the snapshot.

Facts behind these choices: /work/shared/notes/libvirt-hooks.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

URI = "qemu:///system"
# What systemd gives libvirtd.service: a hook started by the daemon inherits exactly this,
# whatever the PATH of the shell that runs the tests (e.g. a pyenv python first on PATH).
DAEMON_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

ETC_LIBVIRT = Path("/etc/libvirt")
HOOKS_DIR = ETC_LIBVIRT / "hooks"
QEMU_CONF = ETC_LIBVIRT / "qemu.conf"
LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")
VIRTLOGD_PIDFILE = Path("/run/virtlogd.pid")
LIBVIRTD_SOCKET = "/run/libvirt/libvirt-sock"
VIRTLOGD_SOCKET = "/run/libvirt/virtlogd-sock"
# Where a daemonized libvirtd writes its errors when there is no journald.
LIBVIRTD_LOG = Path("/var/log/libvirt/libvirtd.log")

# Binary -> Debian package that provides it.
REQUIRED_BINARIES = {
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "virsh": "libvirt-clients",
    "qemu-system-x86_64": "qemu-system-x86",
}

READY_TIMEOUT = 120.0  # the first start probes QEMU's capabilities (~8 s here)
STOP_TIMEOUT = 30.0
VIRSH_TIMEOUT = 60.0

# The smallest domain that starts under TCG (there is no working KVM here): no disk, no
# display; a diskless guest ignores `virsh shutdown`, so tests use `virsh destroy`.
DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <video><model type='none'/></video>
    <memballoon model='none'/>
    {extra_devices}
  </devices>
</domain>
"""


class LibvirtUnavailable(Exception):
    """This machine cannot run the libvirt tier; the message says why and what to do."""


class VirshError(subprocess.CalledProcessError):
    """A virsh command failed; unlike its base class, str() includes virsh's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout.strip()}\nstderr: {self.stderr.strip()}"


def why_unavailable() -> str | None:
    """Why this machine cannot run a test libvirtd, or None if it can."""
    missing = [name for name in REQUIRED_BINARIES if not _which(name)]
    if missing:
        packages = " ".join(sorted({REQUIRED_BINARIES[name] for name in missing}))
        return (
            f"libvirt tests need {', '.join(missing)}, not found in {DAEMON_ENV['PATH']} "
            f"(Debian: apt-get install {packages})"
        )
    if os.geteuid() != 0:
        return "libvirt tests need root: they run the system libvirtd and edit /etc/libvirt"
    foreign = _pids_named("libvirtd") + _pids_named("virtqemud")
    if foreign or LIBVIRTD_SOCKET in _unix_listeners():
        who = (
            f"pid {', '.join(map(str, foreign))}" if foreign else f"a listener on {LIBVIRTD_SOCKET}"
        )
        return (
            f"a libvirt daemon this test run did not start is already serving ({who}); "
            "stop it first (e.g. systemctl stop libvirtd.socket libvirtd), "
            "tests never take over or kill someone else's daemon"
        )
    for number, line in enumerate(QEMU_CONF.read_text().splitlines(), start=1):
        if line.lstrip().startswith("cgroup_controllers"):
            return (
                f"{QEMU_CONF}:{number} already sets cgroup_controllers (left over from an "
                "interrupted test run?); the test daemon sets its own and restores the file"
            )
    return None


@contextmanager
def running_libvirtd(work_dir: Path) -> Iterator[Libvirtd]:
    """A started Libvirtd; afterwards its domains and daemons are gone and /etc/libvirt restored.

    Raises LibvirtUnavailable before touching anything if the machine cannot run it.
    """
    problem = why_unavailable()
    if problem:
        raise LibvirtUnavailable(problem)
    with ExitStack() as stack:  # callbacks run last-registered first, each even if one fails
        stack.callback(TreeSnapshot(ETC_LIBVIRT).restore)
        _prepare_etc()
        daemon = Libvirtd(work_dir)
        stack.callback(daemon.close)
        daemon.start()
        yield daemon


def clear_hooks() -> None:
    """Empty /etc/libvirt/hooks (tests start from no hook at all)."""
    HOOKS_DIR.mkdir(exist_ok=True)
    _empty_dir(HOOKS_DIR)


def release_extra(libvirt_version: tuple[int, ...], shutoff_reason: str) -> str:
    """The last hook argument on `release end`: '-' before libvirt 10.5, the reason after."""
    return "-" if libvirt_version < (10, 5, 0) else shutoff_reason


class Libvirtd:
    """The test daemons (virtlogd + libvirtd) and the domains tests defined on them."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        # Seconds per measured operation, e.g. "libvirtd start" -> [first, later, ...].
        self.timings: dict[str, list[float]] = defaultdict(list)
        self._libvirtd_pid: int | None = None
        self._virtlogd_pid: int | None = None  # None also when someone else's virtlogd serves
        self._domains: dict[str, None] = {}  # insertion-ordered set

    # -- daemon life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start virtlogd if none serves (every domain start needs it), then libvirtd."""
        if not (_pids_named("virtlogd") or VIRTLOGD_SOCKET in _unix_listeners()):
            self._virtlogd_pid = _start_daemon("virtlogd", VIRTLOGD_PIDFILE)
            _wait_for(lambda: VIRTLOGD_SOCKET in _unix_listeners(), 10.0, "virtlogd to listen")
        self._start_libvirtd()

    def restart(self) -> None:
        """Stop and start libvirtd; running guests survive, and their `reconnect begin` hooks have
        run when this returns."""
        self._stop_libvirtd()
        self._start_libvirtd()

    def reload(self) -> None:
        """SIGHUP libvirtd, so that it notices hook files created since it started."""
        os.kill(self._running_libvirtd_pid(), signal.SIGHUP)
        self._wait_ready()
        # A second SIGHUP while the reload thread runs would be ignored: wait for it to end.
        self._wait_for_threads("daemon-reload", "libvirtd to finish reloading")

    def close(self) -> None:
        """Remove the test domains, then stop libvirtd, then virtlogd (if started here)."""
        with ExitStack() as stack:  # runs the callbacks bottom-up, each even if one failed
            if self._virtlogd_pid is not None:
                stack.callback(_stop_pid, self._virtlogd_pid, "virtlogd")
            if self._libvirtd_pid is not None:
                stack.callback(self._stop_libvirtd)
            if self._domains:
                stack.callback(self._remove_domains)

    # -- helpers for tests -------------------------------------------------------------------

    def virsh(
        self, *args: str, check: bool = True, timeout: float = VIRSH_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run `virsh -c qemu:///system ARGS` (LC_ALL=C: English messages to assert on)."""
        argv = [_which("virsh"), "-c", URI, *args]
        result = subprocess.run(
            argv, capture_output=True, text=True, env=DAEMON_ENV, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise VirshError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def define_domain(self, name: str, extra_devices_xml: str = "") -> str:
        """Define the minimal TCG domain `name`; it is destroyed and undefined at teardown."""
        # The PCI devices of this machine are its disk and network: never hand one to a guest.
        if "hostdev" in extra_devices_xml.lower():
            raise ValueError("test domains must not take host devices (<hostdev>)")
        xml_file = self.work_dir / f"{name}.xml"
        xml_file.write_text(DOMAIN_XML.format(name=escape(name), extra_devices=extra_devices_xml))
        self._domains[name] = None
        self.virsh("define", str(xml_file))
        return name

    def install_hook(self, script: str, name: str = "qemu") -> Path:
        """Write an executable hook /etc/libvirt/hooks/NAME and make libvirtd notice it."""
        path = HOOKS_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        path.chmod(0o755)
        self.reload()
        return path

    def is_running(self) -> bool:
        """Whether the libvirtd started here is up (a test's restart may have failed)."""
        return self._libvirtd_pid is not None and _alive(self._libvirtd_pid)

    def daemon_version(self) -> tuple[int, ...]:
        """The running daemon's libvirt version, e.g. (9, 0, 0)."""
        out = self.virsh("version", "--daemon").stdout
        line = next(line for line in out.splitlines() if line.startswith("Running against daemon:"))
        return tuple(int(part) for part in line.split(":")[1].split("."))

    # -- internals ---------------------------------------------------------------------------

    def _start_libvirtd(self) -> None:
        log_offset = LIBVIRTD_LOG.stat().st_size if LIBVIRTD_LOG.exists() else 0
        started = time.monotonic()
        self._libvirtd_pid = _start_daemon("libvirtd", LIBVIRTD_PIDFILE)
        try:
            self._wait_ready()
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            log = _read_from(LIBVIRTD_LOG, log_offset)
            raise RuntimeError(f"{error}\nlibvirtd log since it started:\n{log}") from error
        # The daemon answers before it has reconnected to running guests: that happens (and
        # their `reconnect begin` hooks run) in threads named init-<domain>.
        self._wait_for_threads("init-", "libvirtd to reconnect to running guests")
        self.timings["libvirtd start"].append(time.monotonic() - started)

    def _stop_libvirtd(self) -> None:
        _stop_pid(self._running_libvirtd_pid(), "libvirtd")
        self._libvirtd_pid = None

    def _running_libvirtd_pid(self) -> int:
        if self._libvirtd_pid is None or not _alive(self._libvirtd_pid):
            raise RuntimeError(f"the test libvirtd (pid {self._libvirtd_pid}) is not running")
        return self._libvirtd_pid

    def _wait_ready(self) -> None:
        """Wait until `virsh version` answers, failing early if the daemon died."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            pid = self._running_libvirtd_pid()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"libvirtd (pid {pid}) did not answer within {READY_TIMEOUT:.0f} s"
                )
            # One call can last the whole capability probe: give it all the time left.
            if self.virsh("version", check=False, timeout=left).returncode == 0:
                return
            time.sleep(0.1)

    def _wait_for_threads(self, name_prefix: str, what: str) -> None:
        """Wait until libvirtd has no thread whose name (as libvirt sets it) starts so."""

        def gone() -> bool:
            names = _thread_names(self._running_libvirtd_pid())
            return not any(name.startswith(name_prefix) for name in names)

        _wait_for(gone, STOP_TIMEOUT, what)

    def _remove_domains(self) -> None:
        # A guest left running would outlive the daemon: destroy before undefine.
        running = set(self.virsh("list", "--name").stdout.split())
        defined = set(self.virsh("list", "--all", "--name").stdout.split())
        for name in reversed(self._domains):
            if name in running:
                self.virsh("destroy", name)
            if name in defined:
                self.virsh("undefine", name)
        self._domains.clear()


class TreeSnapshot:
    """Contents, modes, owners and mtimes of a small directory tree, restorable in place.

    restore() touches only what differs: it deletes what was added, rewrites what changed and
    recreates what was removed.
    """

    @dataclass(frozen=True)
    class Entry:
        kind: str  # "dir", "file" or "link"
        mode: int
        uid: int
        gid: int
        mtime_ns: int
        data: bytes | str | None  # file content, link target, None for a directory

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries = {path: self._read(path) for path in _walk(root)}

    def restore(self) -> None:
        for path in sorted(_walk(self.root)):
            entry = self.entries.get(path)
            # A directory already removed with its parent is skipped by the lexists check.
            if os.path.lexists(path) and (entry is None or self._read(path).kind != entry.kind):
                _remove(path)
        for path, entry in sorted(self.entries.items()):  # parents before children
            self._restore_entry(path, entry)
        # Last and children first: creating or deleting entries changes a directory's mtime.
        for path, entry in sorted(self.entries.items(), reverse=True):
            if path.lstat().st_mtime_ns != entry.mtime_ns:
                os.utime(path, ns=(path.lstat().st_atime_ns, entry.mtime_ns), follow_symlinks=False)

    @classmethod
    def _read(cls, path: Path) -> TreeSnapshot.Entry:
        st = path.lstat()
        if path.is_symlink():
            kind, data = "link", os.readlink(path)
        elif path.is_dir():
            kind, data = "dir", None
        else:
            kind, data = "file", path.read_bytes()
        return cls.Entry(kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns, data)

    def _restore_entry(self, path: Path, entry: TreeSnapshot.Entry) -> None:
        current = self._read(path) if os.path.lexists(path) else None
        if current is None or current.data != entry.data:
            if entry.kind == "dir":
                path.mkdir()
            elif entry.kind == "link":
                if current is not None:
                    path.unlink()
                path.symlink_to(entry.data)
            else:
                path.write_bytes(entry.data)
            current = self._read(path)
        if (current.uid, current.gid) != (entry.uid, entry.gid):
            os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
        if entry.kind != "link" and current.mode != entry.mode:
            path.chmod(entry.mode)


def _prepare_etc() -> None:
    with QEMU_CONF.open("a") as conf:
        conf.write(
            "\n# Added by passthrough-hook tests/e2e_libvirt (restored after the run):\n"
            "# without systemd, libvirtd would create cgroups under /sys/fs/cgroup.\n"
            "cgroup_controllers = [ ]\n"
        )
    clear_hooks()
    for autostart in ETC_LIBVIRT.rglob("autostart"):
        if autostart.is_dir() and not autostart.is_symlink():
            _empty_dir(autostart)


def _start_daemon(name: str, pidfile: Path) -> int:
    """Run `NAME -d` as systemd would and return the daemon's pid from its pid file."""
    # The daemon sends its own stdio to /dev/null; `NAME -d` returns once it has started.
    result = subprocess.run(
        [_which(name), "-d"],
        env=DAEMON_ENV,
        cwd="/",
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`{name} -d` exited {result.returncode}: {result.stderr.strip()}")
    pid = int(pidfile.read_text().strip())
    if not _is_process(pid, name):
        raise RuntimeError(f"{pidfile} names pid {pid}, which is not a running {name}")
    return pid


def _stop_pid(pid: int, name: str) -> None:
    """SIGTERM the daemon we started and wait for it to exit; SIGKILL if it will not."""
    if not _is_process(pid, name):  # gone already; never signal a pid reused by someone else
        return
    os.kill(pid, signal.SIGTERM)
    try:
        _wait_for(lambda: not _alive(pid), STOP_TIMEOUT, f"{name} (pid {pid}) to exit on SIGTERM")
    except RuntimeError:
        os.kill(pid, signal.SIGKILL)
        raise


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _which(name: str) -> str | None:
    return shutil.which(name, path=DAEMON_ENV["PATH"])


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_process(pid: int, name: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name and _alive(pid)
    except FileNotFoundError:
        return False


def _pids_named(name: str) -> list[int]:
    return sorted(
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _is_process(int(p.name), name)
    )


def _thread_names(pid: int) -> set[str]:
    names = set()
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            names.add(comm.read_text().strip())
        except FileNotFoundError:  # the thread ended while we looked
            pass
    return names


_SO_ACCEPTCON = 0x10000  # /proc/net/unix flag of a listening socket


def _unix_listeners() -> set[str]:
    """Paths of listening unix sockets, read without connecting (a connection to a systemd
    socket unit would start the daemon behind it)."""
    listeners = set()
    with open("/proc/net/unix") as table:
        next(table)  # header
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and int(fields[3], 16) & _SO_ACCEPTCON:
                listeners.add(fields[7])
    return listeners


def _walk(root: Path) -> Iterator[Path]:
    yield root
    if root.is_dir() and not root.is_symlink():
        for child in root.iterdir():
            yield from _walk(child)


def _empty_dir(directory: Path) -> None:
    for child in directory.iterdir():
        _remove(child)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _read_from(path: Path, offset: int) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")
