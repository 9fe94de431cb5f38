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
    config = hook_constant("CONFIG_DIR")
    assert isinstance(config, ast.Call)  # os.environ.get(ENV, DEFAULT)
    assert [ast.literal_eval(a) for a in config.args] == [
        constants.CONFIG_DIR_ENV,
        constants.CONFIG_DIR,
    ]
    assert ast.literal_eval(hook_constant("STATE_DIR")) == "/" + constants.STATE_DIR
