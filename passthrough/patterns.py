"""Regular expressions compiled when first used.

Most of the program's patterns check what a given event never meets (a size written in a
profile, a line of a kernel file), yet compiled at import they cost every hook process:
under QEMU 5 to 20 ms each, with re's compiler in pure Python. `re` itself (with enum,
functools and collections) is imported on the first match too: most events match none."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    import re
    from collections.abc import Iterator


class Lazy:
    """re.compile(pattern, flags), made on the first match."""

    __slots__ = ("pattern", "flags", "_compiled")

    def __init__(self, pattern: str, flags: int = 0):
        self.pattern = pattern
        self.flags = flags
        self._compiled: re.Pattern[str] | None = None

    @property
    def compiled(self) -> re.Pattern[str]:
        if self._compiled is None:
            import re

            self._compiled = re.compile(self.pattern, self.flags)
        return self._compiled

    def match(self, string: str) -> re.Match[str] | None:
        return self.compiled.match(string)

    def fullmatch(self, string: str) -> re.Match[str] | None:
        return self.compiled.fullmatch(string)

    def search(self, string: str) -> re.Match[str] | None:
        return self.compiled.search(string)

    def findall(self, string: str) -> list:
        return self.compiled.findall(string)

    def finditer(self, string: str) -> Iterator[re.Match[str]]:
        return self.compiled.finditer(string)
