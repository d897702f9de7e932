"""Every node parameter is declared once (a setting of a dataclass), and config/adaspring.yaml
agrees with the declarations key by key and default by default. No ROS needed."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from adaspring_ros.core import paths
from adaspring_ros.core.policy.budgets import BudgetParams
from adaspring_ros.core.policy.evolution import EvolutionParams
from adaspring_ros.core.policy.lambdas import LambdaParams
from adaspring_ros.core.policy.objective import ObjectiveParams
from adaspring_ros.core.validation import from_ros, ros_default, setting, settings_of
from adaspring_ros.nodes.settings import NODE_SETTINGS


def yaml_sections() -> dict[str, dict]:
    text = (paths.config_dir() / "adaspring.yaml").read_text()
    return {node: body["ros__parameters"] for node, body in yaml.safe_load(text).items()}


def declared(node: str) -> dict[str, object]:
    return {f.name: ros_default(f) for cls in NODE_SETTINGS[node] for f in settings_of(cls)}


def test_yaml_has_a_section_per_node_and_nothing_else():
    assert set(yaml_sections()) == set(NODE_SETTINGS)


@pytest.mark.parametrize("node", sorted(NODE_SETTINGS))
def test_yaml_agrees_with_the_declarations_key_by_key_and_default_by_default(node):
    keys = yaml_sections()[node]
    defaults = declared(node)
    assert not set(keys) - set(defaults), f"{node}: not parameters: {set(keys) - set(defaults)}"
    assert not set(defaults) - set(keys), f"{node}: not in the YAML: {set(defaults) - set(keys)}"
    for name, value in keys.items():
        assert type(value) is type(defaults[name]), f"{node}.{name}: type"
        assert value == defaults[name], f"{node}.{name}: {value!r} != {defaults[name]!r}"


@pytest.mark.parametrize("node", sorted(NODE_SETTINGS))
def test_no_parameter_is_declared_twice_in_a_node(node):
    names = [f.name for cls in NODE_SETTINGS[node] for f in settings_of(cls)]
    assert len(names) == len(set(names))


def test_every_policy_setting_is_an_evolution_node_parameter():
    # Not parameters: the node reports at most one deadline miss per window.
    internal = {"deadline_miss_trigger"}
    params = declared("evolution_node")
    for cls in (EvolutionParams, BudgetParams, LambdaParams, ObjectiveParams):
        for f in fields(cls):
            assert f.name in params or f.name in internal, f"{cls.__name__}.{f.name}"


@pytest.mark.parametrize("cls", [EvolutionParams, BudgetParams, LambdaParams, ObjectiveParams])
def test_core_defaults_are_valid_and_inside_their_parameter_range(cls):
    cls()  # the defaults pass the dataclass's own checks
    for f in settings_of(cls):
        limits, default = f.metadata["range"], ros_default(f)
        if limits is not None:
            assert limits[0] <= default <= limits[1], f"{cls.__name__}.{f.name}"


def test_none_maps_to_the_parameter_value_that_means_none():
    budget = {f.name: f for f in settings_of(BudgetParams)}
    assert ros_default(budget["mission_duration_s"]) == 0.0
    assert from_ros(budget["mission_duration_s"], 0.0) is None
    assert from_ros(budget["mission_duration_s"], 60.0) == 60.0
    safe = {f.name: f for f in settings_of(EvolutionParams)}["safe_config_id"]
    assert ros_default(safe) == "" and from_ros(safe, "") is None


def test_a_setting_defaulting_to_none_needs_its_none_value():
    with pytest.raises(ValueError, match="none"):
        setting(None, "no value for none")


def test_choices_hold_the_default_and_name_the_allowed_values():
    with pytest.raises(ValueError, match="choices"):
        setting("webcam", "a source", choices=("psutil", "scenario"))
    for node, classes in NODE_SETTINGS.items():
        for cls in classes:
            for f in settings_of(cls):
                choices = f.metadata["choices"]
                assert choices is None or f.default in choices, f"{node}.{f.name}"
