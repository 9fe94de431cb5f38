"""The registry of profile actions: name -> class. Every action is listed here by hand."""

from __future__ import annotations

from .base import Action
from .command import Command
from .cpus import Cpus
from .display_manager import DisplayManager
from .drivers import Bind, Detach, Reattach, Unbind
from .framebuffer import Framebuffer
from .governor import Governor
from .hugepages import Hugepages
from .kill_holders import KillHolders
from .modprobe import Modprobe
from .remove_rescan import RemoveRescan
from .reset_method import ResetMethod
from .resize_bar import ResizeBar
from .scripts import Scripts
from .sysfs_write import SysfsWrite
from .undo import Undo
from .vtconsoles import VtConsoles

REGISTRY: dict[str, type[Action]] = {
    cls.name: cls
    for cls in (
        Modprobe,
        Detach,
        Reattach,
        Unbind,
        Bind,
        ResizeBar,
        RemoveRescan,
        ResetMethod,
        Undo,
        # the toolbox: single-GPU hosts, tuning, escape hatches, legacy scripts
        DisplayManager,
        KillHolders,
        VtConsoles,
        Framebuffer,
        Cpus,
        Governor,
        Hugepages,
        SysfsWrite,
        Command,
        Scripts,
    )
}
