"""A user's own model through the real nodes over real DDS: a tiny colour backbone of a search
space other than the default one (3 channels, resolutions 32/40/48, two widths and depths) with
its synthetic profile table, fed by the replay camera from an image folder as 640x480 colour
frames.

The perception node starts on a variant of that space, labels its results and ModelInfo with the
card's class names; the evolution node decodes every Reconfigure reply in the table's space, so
its swaps (the first choice, then the stale-context fallback to a safe variant of that space)
take effect and none is counted as refused, timed out or abandoned.
"""

from __future__ import annotations

import pytest
from colour_model import CARD, SPACE, write_colour_model, write_image_folder
from ros_harness import NodeProcess, PerceptionEnds
from test_ros_evolution import FAST_POLICY, Graph, context_msg, values

from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.profile_table import ProfileTable
from adaspring_ros.core.serving.replay import parse_labelled_frame_id

pytestmark = pytest.mark.ros

NODES = "adaspring_ros.nodes."


def applied(graph: Graph) -> str | None:
    """The variant the evolution node's latest /diagnostics says perception serves."""
    status = graph.status("evolution_node perception")
    return values(status).get("applied") if status is not None else None


def serving(out: PerceptionEnds) -> str | None:
    """The variant of the latest result."""
    return out.results[-1].config_id if out.results else None


def test_the_evolution_node_swaps_within_a_colour_models_own_space(rclpy_node, tmp_path):
    from adaspring_ros.msg import ModelInfo

    from adaspring_ros.nodes.qos import MODEL_INFO_QOS, MODEL_INFO_TOPIC

    backbone, table_path = write_colour_model(tmp_path / "model")
    folder = write_image_folder(tmp_path / "task")
    full, smallest, mid = (e.id for e in ProfileTable.load(table_path).entries)
    assert smallest == CompressionConfig.smallest(SPACE).id
    graph = Graph(rclpy_node)
    graph.context = context_msg(100.0)     # from the start: silence would be a stale context
    out = PerceptionEnds(rclpy_node)
    infos = []
    rclpy_node.create_subscription(ModelInfo, MODEL_INFO_TOPIC, infos.append, MODEL_INFO_QOS)
    procs = [
        NodeProcess.module(NODES + "camera_replay_node", tmp_path, ros_args=[
            "-p", "source:=image_folder", "-p", f"path:={folder}",
            "-p", f"backbone_path:={backbone}", "-p", "rate_hz:=10.0"]),
        NodeProcess.module(NODES + "perception_node", tmp_path, ros_args=[
            "-p", f"backbone_path:={backbone}", "-p", f"profile_table:={table_path}",
            "-p", f"initial_config:={smallest}", "-p", "metrics_period_s:=0.5"]),
        NodeProcess.module(NODES + "evolution_node", tmp_path, ros_args=[
            "-p", f"profile_table:={table_path}", *FAST_POLICY, "-p", f"safe_config_id:={mid}",
            "-p", "stale_after_s:=1.5"]),
    ]
    try:
        graph.wait_config(full, procs, 90)     # the most accurate variant fits the budget
        out.wait(lambda: serving(out) == full, "a result of " + full, 20, procs)
        graph.context = None                   # silence: stale context, the safe variant
        graph.wait_config(mid, procs, 30)
        out.wait(lambda: serving(out) == mid, "a result of " + mid, 20, procs)
        out.wait(lambda: infos, "the latched ModelInfo", 10, procs)
        out.wait(lambda: applied(graph) == mid, "diagnostics after the fallback", 10, procs)
    finally:
        graph.context = None
        stopped = [p.stop() for p in procs]
    counts = values(graph.status("evolution_node perception"))
    assert int(counts["swaps"]) >= 2, counts
    for failed in ("refused", "timeouts", "abandoned", "metrics_rejected"):
        assert counts[failed] == "0", counts
    log = procs[2].log_path.read_text()
    assert "perception refused" not in log and f"-> {mid}" in log, log[-3000:]
    assert list(infos[-1].class_names) == list(CARD.classes)
    served = {r.config_id for r in out.results}
    assert {full, mid} <= served and served <= {full, smallest, mid}
    for result in out.results:
        assert result.label == CARD.classes[result.class_id]
        label, seq = parse_labelled_frame_id(result.header.frame_id)
        assert label in range(len(CARD.classes)) and seq is not None
    assert stopped[1] == 0, procs[1].output()[-3000:]
    assert f"serving {smallest} " in procs[1].output()     # its initial_config, of SPACE
