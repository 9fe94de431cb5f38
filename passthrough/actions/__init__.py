"""The registry of profile actions: name -> class. Every action is listed here by hand."""

from __future__ import annotations

from .base import Action
from .drivers import Bind, Detach, Reattach, Unbind
from .modprobe import Modprobe
from .resize_bar import ResizeBar
from .undo import Undo

REGISTRY: dict[str, type[Action]] = {
    cls.name: cls for cls in (Modprobe, Detach, Reattach, Unbind, Bind, ResizeBar, Undo)
}
