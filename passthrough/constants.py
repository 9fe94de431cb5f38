"""One home for the names and paths the whole program shares (hooks/qemu repeats the two it
needs before importing anything; a test keeps them equal)."""

from __future__ import annotations

PROG = "passthrough-hook"
# Profiles: <CONFIG_DIR>/<domain>.yaml; PASSTHROUGH_HOOK_CONFIG_DIR overrides it.
CONFIG_DIR = "/etc/libvirt/hooks/passthrough"
CONFIG_DIR_ENV = "PASSTHROUGH_HOOK_CONFIG_DIR"
# Journals and the lock, and the log, relative to the root (`--root`, default /).
STATE_DIR = "run/passthrough-hook"
LOG_FILE = "var/log/libvirt/passthrough-hook.log"
# Drivers that hold a device for a VM rather than drive it for the host.
STUB_DRIVERS = ("vfio-pci", "pci-stub")
# A PCI address as sysfs spells it: domain:bus:slot.function, lower case.
PCI_ADDRESS = r"[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]"
# The names the kernel accepts in reset_method (drivers/pci/pci.c pci_reset_fn_methods).
RESET_METHODS = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")
