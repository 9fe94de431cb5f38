"""`passthrough-hook schema`: the JSON Schema of profiles, generated from the same
declarations the validator uses (actions' `Args`, profile.EVENTS and STEP_OPTIONS).

The package ships it as passthrough/profile.schema.json for editors (profiles name it in
a `# yaml-language-server: $schema=...` line); a test keeps that file equal to this
output. Regenerate: `python3 -m passthrough schema > passthrough/profile.schema.json`.
Draft-07, the newest draft yaml-language-server supports. What JSON Schema cannot say
(device names must be defined under devices:, one name per address, BAR sizes that
are not powers of two) only the validator checks: `passthrough-hook validate`.
"""

from __future__ import annotations

import argparse
import inspect
import json
from typing import TYPE_CHECKING, TextIO

from ..errors import EXIT_OK
from .common import parser_for

if TYPE_CHECKING:
    from ..actions.base import Action

DEVICE_NAME = r"^[A-Za-z][A-Za-z0-9_.-]*$"  # as profile._devices checks it


def build_parser() -> argparse.ArgumentParser:
    return parser_for(
        "schema",
        "Print the JSON Schema of profiles (the file shipped as passthrough/profile.schema.json).",
    )


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    build_parser().parse_args(argv)
    out.write(render())
    return EXIT_OK


def render() -> str:
    return json.dumps(profile_schema(), indent=2, ensure_ascii=False) + "\n"


def profile_schema() -> dict:
    from ..actions import REGISTRY
    from ..profile import EVENTS, LOG_LEVELS, STEP_OPTIONS
    from ..schema import PciAddress

    options = {name: option.json_schema() for name, option in STEP_OPTIONS.items()}
    options["timeout"]["description"] = "seconds the whole step may take"
    options["force"]["description"] = "override a safety refusal"
    steps = [
        {
            "title": name,
            "type": "object",
            "properties": {
                name: {**action.args.json_schema(), "description": _summary(action)},
                **options,
            },
            "required": [name],
            "additionalProperties": False,
        }
        for name, action in REGISTRY.items()
    ]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "passthrough-hook profile",
        "description": "Steps passthrough-hook runs for one libvirt domain "
        "(/etc/libvirt/hooks/passthrough/<domain>.yaml).",
        "type": "object",
        "properties": {
            "devices": {
                "description": "names for PCI functions, used by the steps (addresses from lspci -D)",
                "type": "object",
                "propertyNames": {"pattern": DEVICE_NAME},
                "additionalProperties": PciAddress().json_schema(),
            },
            "log_level": {
                "description": "what the hook logs for this domain: info (each step, its time "
                "and outcome; the default) or debug (also every operation of each step)",
                "enum": list(LOG_LEVELS),
            },
            **{
                event: {"$ref": "#/definitions/steps", "description": _event_description(event)}
                for event in EVENTS
            },
        },
        "additionalProperties": False,
        "definitions": {
            "steps": {
                "oneOf": [
                    {"type": "array", "items": {"$ref": "#/definitions/step"}},
                    {"type": "null", "description": "no steps: do nothing on this event"},
                ]
            },
            "step": {"description": "one action, plus optional timeout and force", "oneOf": steps},
        },
    }


def _summary(action: type[Action]) -> str:
    """The action's docstring as one paragraph: editors show it on hover."""
    return " ".join(inspect.cleandoc(action.__doc__ or action.name).split())


def _event_description(event: str) -> str:
    operation, sub_operation = event.split("/")
    text = f"steps run when libvirt calls the hook with `{operation} {sub_operation}`"
    if event == "release/end":
        text += "; without this key, everything prepare/begin changed is undone"
    return text
