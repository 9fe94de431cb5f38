"""The action registry: every action listed once, each module imported only when an event
needs one of its actions (profile validation, journal undo); tools still see them all."""

from __future__ import annotations

import pkgutil

from runs import REPO, probe

import passthrough.actions
from passthrough.actions import ACTIONS, REGISTRY, Registry
from passthrough.actions.base import Action, UnknownAction


def test_every_listed_name_is_the_action_of_that_name_in_its_module():
    for name, (module, cls) in ACTIONS.items():
        action = REGISTRY[name]
        assert issubclass(action, Action), name
        assert action.name == name
        assert action.__module__ == f"passthrough.actions.{module}"
        assert action.__name__ == cls


def test_every_action_class_in_the_package_is_listed():
    defined = set()
    for info in pkgutil.iter_modules(passthrough.actions.__path__):
        module = __import__(f"passthrough.actions.{info.name}", fromlist=("x",))
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Action)
                and value.__module__ == module.__name__
                and "name" in vars(value)
                and value is not UnknownAction
            ):
                defined.add(value)
    assert defined == set(REGISTRY.values())
    assert len(REGISTRY) == len(ACTIONS) == len(set(REGISTRY.values()))


def test_a_stand_in_replaces_an_action_and_goes_again():
    registry = Registry(ACTIONS)

    class StandIn(Action):
        name = "detach"

    real = registry["detach"]
    registry["detach"] = StandIn
    assert registry["detach"] is StandIn and list(registry) == list(ACTIONS)
    registry["detach"] = real
    registry["extra"] = StandIn
    assert list(registry)[-1] == "extra" and "extra" in registry
    del registry["extra"]
    assert "extra" not in registry and registry.get("extra") is None
    assert registry.get("no_such_action") is None


PROBE = """
import json, sys
from passthrough.actions import REGISTRY
from passthrough.journal import action_of
from passthrough.profile import load_profile
from passthrough.errors import ProfileError

def loaded():
    return sorted(m for m in sys.modules if m.startswith("passthrough.actions."))

names = ", ".join(REGISTRY)
known = "detach" in REGISTRY and "nothing" not in REGISTRY
before = loaded()
load_profile(sys.argv[1])
profile = loaded()
undo = action_of({"action": "remove_rescan"}).name
unknown = action_of({"action": "from_a_newer_version"}).name
journal = loaded()
try:
    load_profile(sys.argv[2])
except ProfileError as exc:
    problems = exc.problems
print(json.dumps({"before": before, "profile": profile, "journal": journal, "undo": undo,
                  "unknown": unknown, "problems": problems, "known": known}))
"""


def test_an_event_imports_only_the_actions_its_profile_and_journal_name(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text('devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detatch: [gpu]\n')
    result = probe(PROBE, str(REPO / "config/win10.yaml"), str(typo))
    assert result["known"] is True
    assert result["before"] == []  # listing and testing names imports no action
    seed = ["passthrough.actions.base", "passthrough.actions.drivers"]
    seed += ["passthrough.actions.modprobe", "passthrough.actions.resize_bar"]
    assert result["profile"] == seed
    assert result["undo"] == "remove_rescan" and result["unknown"] == "unknown"
    assert result["journal"] == sorted([*seed, "passthrough.actions.remove_rescan"])
    assert result["problems"] == [
        f'{typo}:3:5: unknown action "detatch" (did you mean "detach"?); expected one of '
        + ", ".join(ACTIONS)
    ]
