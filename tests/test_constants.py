"""hooks/qemu repeats the two paths it needs before it imports anything: they must stay the
program's (passthrough/constants.py)."""

import ast

from tool_trees import REPO

from passthrough import constants


def hook_constant(name: str) -> ast.expr:
    tree = ast.parse((REPO / "hooks/qemu").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == name:  # type: ignore[attr-defined]
            return node.value
    raise AssertionError(f"hooks/qemu has no {name}")


def test_the_hooks_paths_are_the_programs():
    # posix.environ (no os before there is work) has bytes keys.
    assert ast.literal_eval(hook_constant("CONFIG_DIR_ENV")) == constants.CONFIG_DIR_ENV.encode()
    assert ast.literal_eval(hook_constant("DEFAULT_CONFIG_DIR")) == constants.CONFIG_DIR
    assert ast.literal_eval(hook_constant("STATE_DIR")) == "/" + constants.STATE_DIR
