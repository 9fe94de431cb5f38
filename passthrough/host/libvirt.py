"""libvirt's node-device API (`virsh nodedev-detach` / `nodedev-reattach`), bounded in time.

Each call runs in a detached helper process (host/detached.py `command`): libvirtd
unbinds the device itself, and when a process holds it that unbind waits in the kernel,
so libvirtd does not answer. The hook then stops waiting, notes the device stuck (the
helper's pid says when libvirtd has answered) and exits; nothing of the hook waits on
the helper. The helper imports `libvirt` (which costs more than the whole fast path),
never the hook. Only node-device calls are made from the hook; domain calls from inside
a hook block (../shared/notes/libvirt-hooks.md).
"""

from __future__ import annotations

import os
import sys

from ..errors import HostError, StepTimeout, UnsafeOperation
from ..units import nodedev_name
from . import detached

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from . import Host

URI = "qemu:///system"

# The helper: argv is uri, detach|reattach, the node device's name, the driver, then
# directories to put first on sys.path (tests: a stand-in libvirt module). Its output is
# libvirt's error message; exit 3: no bindings, 2: no such node device.
HELPER = """\
import sys
sys.path[:0] = sys.argv[5:]
try:
    import libvirt
except ImportError:
    sys.stdout.write("the libvirt Python bindings are not installed")
    sys.exit(3)
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
uri, verb, name, driver = sys.argv[1:5]
try:
    connection = libvirt.open(uri)
except libvirt.libvirtError as exc:
    sys.stdout.write(exc.get_error_message() or str(exc))
    sys.exit(2)
try:
    device = connection.nodeDeviceLookupByName(name)
except libvirt.libvirtError as exc:
    sys.stdout.write(exc.get_error_message() or str(exc))
    sys.exit(2)
try:
    if verb == "detach":
        device.detachFlags(driver, 0)
    else:
        device.reAttach()
except libvirt.libvirtError as exc:
    sys.stdout.write(exc.get_error_message() or str(exc))
    sys.exit(1)
"""


def stuck_call(host: Host, address: str, verb: str, exc: detached.StuckWrite) -> StepTimeout:
    """Note a node-device call that did not return stuck: libvirtd is likely inside the
    kernel's unbind of the device, holding its lock, so nothing more in this run touches
    it. The error to raise."""
    host.note_stuck(
        address,
        f"libvirt nodedev-{verb} {nodedev_name(address)}",
        exc.pid,
        address=address,
        driver=host.sysfs.link_name(f"bus/pci/devices/{address}/driver"),
    )
    return StepTimeout(
        f"libvirt {verb} of {address} did not return within {exc.timeout:.1f} s: libvirtd is "
        f"likely waiting in "
        f"the kernel's unbind of the device (helper pid {exc.pid} waits for its answer)",
        device=address,
    )


class NodeDevices:
    def __init__(self, root: str | os.PathLike, host: Host, uri: str = URI):
        self.root = os.fspath(root)
        self.host = host
        self.uri = uri
        self.python_path: list[str] = []  # put first on the helper's sys.path (tests)

    def _call(self, address: str, verb: str, driver: str = "") -> None:
        if os.path.realpath(self.root) != "/":
            raise UnsafeOperation(
                f"libvirt acts on the real host, not on --root {self.root}; use `via: sysfs` or --dry-run"
            )
        name = nodedev_name(address)
        argv = [sys.executable, "-I", "-c", HELPER, self.uri, verb, name, driver, *self.python_path]
        try:
            code, output = detached.command(
                argv, self.host.time_left(), f"libvirt {verb} of {address}", env=dict(os.environ)
            )
        except detached.StuckWrite as exc:
            raise stuck_call(self.host, address, verb, exc) from None
        message = output.strip().splitlines()[-1] if output.strip() else f"exit status {code}"
        if code == 3:
            raise HostError(message, hint="install python3-libvirt, or use `via: sysfs`")
        if code == 2:
            raise HostError(f"libvirt ({self.uri}): {message}", device=address)
        if code:
            raise HostError(f"libvirt {verb} failed: {message}", device=address)

    def detach(self, address: str, driver: str, effect: str) -> None:
        """virNodeDeviceDetachFlags(dev, "vfio"): libvirt sets driver_override, unbinds and probes."""
        self.host.refuse_if_stuck(address, "detach it through libvirt")
        self.host.record(f"libvirt nodedev-detach {nodedev_name(address)} --driver vfio", effect)
        self._call(address, "detach", driver)

    def reattach(self, address: str, effect: str, previous_driver: str | None = None) -> None:
        """virNodeDeviceReAttach: libvirt clears driver_override, unbinds and reprobes.

        previous_driver is what the caller expects back; only the dry run's prediction uses it.
        """
        self.host.refuse_if_stuck(address, "reattach it through libvirt")
        self.host.record(f"libvirt nodedev-reattach {nodedev_name(address)}", effect)
        self._call(address, "reattach")
