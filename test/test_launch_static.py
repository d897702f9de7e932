"""Static checks of launch/*.py (read with ``ast``, so they run where ``launch`` is not installed;
test_ros2_cli.py runs the files) and of config/*.yaml against the parameters the nodes declare.

* every ``executable=`` a launch file names is installed by CMakeLists.txt and exists in scripts/;
* every parameter file or scenario it names exists under config/, every launch file it includes
  under launch/;
* each launched node's ``name=`` has a section in config/adaspring.yaml, and the parameter
  overrides a launch file passes inline are declared by that node;
* every key under ``<node>: ros__parameters:`` in config/*.yaml is a parameter that node declares,
  and every parameter a node declares is documented there: checked by constructing each node
  in-process with rclpy on that very YAML (which also checks the value types) and asking it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
PACKAGE = "adaspring_ros"
# Declared by rclpy itself for every node.
BUILT_IN = {"use_sim_time", "start_type_description_service"}
NODE_ACTIONS = ("Node", "LifecycleNode")


def launch_nodes(path: Path) -> list[dict]:
    """The Node(...) and LifecycleNode(...) actions of a launch file: their keyword arguments,
    constants resolved."""
    tree = ast.parse(path.read_text())
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value,
                                                                              ast.Constant)}

    def value(node: ast.AST):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name) and node.id in constants:
            return constants[node.id]
        return node

    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") in NODE_ACTIONS:
            kwargs = {k.arg: value(k.value) for k in call.keywords}
            kwargs["line"] = call.lineno
            nodes.append(kwargs)
    return nodes


def string_constants(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def installed_programs() -> set[str]:
    cmake = (REPO / "CMakeLists.txt").read_text()
    blocks = re.findall(r"install\s*\(\s*PROGRAMS(.*?)DESTINATION", cmake, re.S)
    return {Path(p).name for block in blocks for p in block.split() if p.startswith("scripts/")}


def config_sections() -> dict[str, dict]:
    """node name -> {parameter: value} over every config/*.yaml with ros__parameters."""
    sections: dict[str, dict] = {}
    for path in sorted((REPO / "config").glob("*.yaml")):
        for node, body in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(body, dict) and "ros__parameters" in body:
                sections.setdefault(node, {}).update(body["ros__parameters"])
    return sections


def test_launch_files_exist():
    names = {p.name for p in LAUNCH_FILES}
    assert {"adaspring.launch.py", "demo.launch.py"} <= names


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_executables_are_installed(path):
    nodes = launch_nodes(path)
    programs = installed_programs()
    for node in nodes:
        where = f"{path.name}:{node['line']}"
        assert node.get("package") == PACKAGE, where
        exe = node.get("executable")
        assert isinstance(exe, str), f"{where}: executable must be a literal"
        assert exe in programs, f"{where}: {exe} is not in CMakeLists.txt install(PROGRAMS)"
        script = REPO / "scripts" / exe
        assert script.is_file(), f"{where}: scripts/{exe} does not exist"
        assert f"adaspring_ros.nodes.{exe} import main" in script.read_text(), where
        assert node.get("name") == exe, f"{where}: name= should match the YAML section {exe}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_name_existing_files(path):
    named = [s for s in string_constants(path) if s.endswith((".yaml", ".launch.py"))]
    assert named, f"{path.name} names no parameter file"
    for name in named:
        base = REPO / ("launch" if name.endswith(".launch.py") else "config")
        assert (base / name).is_file(), f"{path.name} names {name}, missing under {base.name}/"


@pytest.fixture(scope="module")
def declared() -> dict[str, set[str]]:
    """node name -> the parameters it declares, from nodes constructed on config/adaspring.yaml."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node

    sections = config_sections()
    out = {}
    rclpy.init(args=["--ros-args", "--params-file", str(REPO / "config" / "adaspring.yaml")])
    try:
        for name in sections:
            module = importlib.import_module(f"adaspring_ros.nodes.{name}")
            classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
                       if issubclass(c, Node) and c.__module__ == module.__name__]
            assert len(classes) == 1, f"{module.__name__} should define one Node subclass"
            node = classes[0]()
            try:
                assert node.get_name() == name
                out[name] = set(node.list_parameters([], 0).names) - BUILT_IN
                for key, value in sections[name].items():  # the YAML value reached the node
                    if node.has_parameter(key):
                        assert node.get_parameter(key).value == value, f"{name}.{key}"
            finally:
                node.destroy_node()
    finally:
        rclpy.try_shutdown()
    return out


@pytest.mark.ros
def test_every_yaml_key_is_declared_and_every_parameter_documented(declared):
    for node, params in config_sections().items():
        unknown = set(params) - declared[node]
        assert not unknown, f"config keys {sorted(unknown)} are not parameters of {node}"
        undocumented = declared[node] - set(params)
        assert not undocumented, f"{node} parameters missing from config/: {sorted(undocumented)}"


@pytest.mark.ros
def test_yaml_has_every_launched_node_and_inline_overrides_are_declared(declared):
    sections = config_sections()
    for path in LAUNCH_FILES:
        for node in launch_nodes(path):
            name = node["name"]
            assert name in sections, f"{path.name}: no config section for {name}"
            for item in getattr(node.get("parameters"), "elts", []):
                if isinstance(item, ast.Dict):
                    keys = {k.value for k in item.keys}
                    assert keys <= declared[name], (
                        f"{path.name}:{node['line']}: {sorted(keys - declared[name])} are not "
                        f"parameters of {name}")
