"""passthrough-hook: a libvirt QEMU hook that prepares and restores PCI passthrough devices.

Nothing here may do work at import time: the hook is run for every event of every
libvirt domain, and most of those calls must exit before anything heavy loads.
"""

__version__ = "0.1.0"
