"""libvirt's node-device API (`virsh nodedev-detach` / `nodedev-reattach`), bounded in time.

Imported only when a step uses it: `import libvirt` costs more than the whole fast path.
Only node-device calls are made from the hook; domain calls from inside a hook block
(../shared/notes/libvirt-hooks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HostError, UnsafeOperation
from ..units import nodedev_name

if TYPE_CHECKING:
    from . import Host

URI = "qemu:///system"


class NodeDevices:
    def __init__(self, root: Path, host: Host, uri: str = URI):
        self.root = Path(root)
        self.host = host
        self.uri = uri
        self._connection: Any = None  # libvirt.virConnect, opened on first use

    def _lookup(self, address: str) -> Any:  # libvirt.virNodeDevice
        if self.root.resolve() != Path("/"):
            raise UnsafeOperation(
                f"libvirt acts on the real host, not on --root {self.root}; use `via: sysfs` or --dry-run"
            )
        try:
            import libvirt
        except ImportError:
            raise HostError(
                "the libvirt Python bindings are not installed",
                hint="install python3-libvirt, or use `via: sysfs`",
            ) from None
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stray prints on stderr
        try:
            if self._connection is None:
                self._connection = self.host.bounded(
                    f"connecting to {self.uri}", lambda: libvirt.open(self.uri)
                )
            name = nodedev_name(address)
            return self.host.bounded(
                f"looking up {name}", lambda: self._connection.nodeDeviceLookupByName(name)
            )
        except libvirt.libvirtError as exc:
            raise HostError(f"libvirt: {exc.get_error_message()}", device=address) from None

    def _call(self, address: str, what: str, call: Callable[[], object]) -> None:
        import libvirt

        try:
            self.host.bounded(f"libvirt {what} of {address}", call)
        except libvirt.libvirtError as exc:
            raise HostError(
                f"libvirt {what} failed: {exc.get_error_message()}", device=address
            ) from None

    def detach(self, address: str, driver: str, effect: str) -> None:
        """virNodeDeviceDetachFlags(dev, "vfio"): libvirt sets driver_override, unbinds and probes."""
        self.host.refuse_if_stuck(address, "detach it through libvirt")
        self.host.record(f"libvirt nodedev-detach {nodedev_name(address)} --driver vfio", effect)
        device = self._lookup(address)
        self._call(address, "detach", lambda: device.detachFlags(driver, 0))

    def reattach(self, address: str, effect: str, previous_driver: str | None = None) -> None:
        """virNodeDeviceReAttach: libvirt clears driver_override, unbinds and reprobes.

        previous_driver is what the caller expects back; only the dry run's prediction uses it.
        """
        self.host.refuse_if_stuck(address, "reattach it through libvirt")
        self.host.record(f"libvirt nodedev-reattach {nodedev_name(address)}", effect)
        device = self._lookup(address)
        self._call(address, "reattach", device.reAttach)
