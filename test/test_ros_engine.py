"""The engine contract across nodes: the evolution node refuses a table of another engine."""

from __future__ import annotations

import pytest
from ros_harness import NodeProcess

from tools.synthetic_tables import synthetic_table

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("engine, table_engine", [
    ("onnxruntime", "torch"),
    ("torch", "onnxruntime"),
])
def test_evolution_node_refuses_a_table_of_another_engine(tmp_path, engine, table_engine):
    table = synthetic_table(5)
    table.engine = {"name": table_engine, "version": "x", "threads": 1}
    table.save(tmp_path / "table.json")
    proc = NodeProcess.module("adaspring_ros.nodes.evolution_node", tmp_path, ros_args=[
        "-p", f"profile_table:={tmp_path / 'table.json'}", "-p", f"engine:={engine}"])
    try:
        code = proc.proc.wait(60)
    finally:
        proc.kill()
    assert code == 2, proc.output()[-2000:]
    out = proc.output()
    assert f"measured in engine '{table_engine}'" in out and f"run in '{engine}'" in out
    assert "Traceback" not in out
