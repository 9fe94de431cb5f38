"""`--json`: one versioned document on stdout per command run, also for errors.

Every document carries "format" (FORMAT, raised when a field changes meaning or goes away)
and "command"; the shapes are declared in output.schema.json, shipped with the package.
"""

from __future__ import annotations

import json
from pathlib import Path

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from typing import Any, TextIO

FORMAT = 1
SCHEMA = Path(__file__).resolve().parent / "output.schema.json"


def document(command: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "command": command, **body}


def emit(out: TextIO, command: str, body: dict[str, Any]) -> None:
    print(json.dumps(document(command, body), indent=2), file=out)


def error_body(message: str, exit_code: int, problems: list[str] | None = None) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"message": message, "exit_code": exit_code, "problems": problems or [message]},
    }
