"""Regression tests for the hostile inputs of issue 18, each sent from this process to real nodes.

One graph: a real perception node under a 3 GiB address-space cap (RLIMIT_AS, as on a small
robot), a real evolution node over it (3-row profile table of test_ros_evolution.py), and this
process as the context source and the attacker. In order:

1. the step bomb (1,920 bytes claiming 4 GiB) and its relatives are refused and counted, and
   decoding a frame costs memory in proportion to its data, not to its header;
2. ContextState with +inf/-inf (and absurdly large) readings is counted in context_rejected and
   never swaps;
3. forged PerformanceMetrics (unknown variant, another variant, future, past and negative
   stamps) are counted and ignored, nothing is re-published, and the evolution and perception
   nodes' swap counters agree;
4. images with stamps that cannot be right are classified but counted in stamps_rejected and
   left out of the end-to-end latency the deadline feedback reads;
5. a config_id with non-ASCII digits is refused as an invalid request naming the reason.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fuzz_harness import Diagnostics, Perception, spin_for
from ros_harness import NodeProcess, call_service, spin_until

pytestmark = pytest.mark.ros

P = "/hostile"
ADDRESS_SPACE = 3 << 30  # 3 GiB: the node needs ~1.5 GB of address space to run
STAMP_TOLERANCE_S = 5.0
NAN = float("nan")


class Graph:
    def __init__(self, node, log_dir, backbone) -> None:
        from adaspring_ros.msg import CompressionConfig as ConfigMsg
        from adaspring_ros.msg import ContextState, PerformanceMetrics
        from test_ros_evolution import FAST_POLICY, MID_POLICY, context_msg, write_table

        from adaspring_ros.nodes.qos import CONFIG_QOS, CONTEXT_QOS, METRICS_QOS

        self.node = node
        table, self.full, self.fast, self.mid = write_table(log_dir)
        self.perception = Perception(node, log_dir, backbone, P, "hostile_perception",
                                     extra=["-p", f"stamp_tolerance_s:={STAMP_TOLERANCE_S}"],
                                     address_space_bytes=ADDRESS_SPACE)
        self.evolution = NodeProcess.module(
            "adaspring_ros.nodes.evolution_node", log_dir, "hostile_evolution", ros_args=[
                "-r", "__node:=hostile_evolution", "-r", f"/adaspring/context:={P}/context",
                "-r", f"/adaspring/metrics:={P}/metrics", "-r", f"/adaspring/config:={P}/config",
                "-r", f"/adaspring/perception/reconfigure:={P}/reconfigure",
                "-r", f"/diagnostics:={P}/evolution_diagnostics",
                "-p", f"profile_table:={table}", *FAST_POLICY, *MID_POLICY,
                "-p", "stale_after_s:=60.0", "-p", "deadline_feedback:=true",
                "-p", f"stamp_tolerance_s:={STAMP_TOLERANCE_S}"])
        self.configs: list = []
        node.create_subscription(ConfigMsg, f"{P}/config", self.configs.append, CONFIG_QOS)
        self.evolution_diagnostics = Diagnostics(node, f"{P}/evolution_diagnostics")
        self.perception_diagnostics = Diagnostics(node, f"{P}/diagnostics")
        self.context = node.create_publisher(ContextState, f"{P}/context", CONTEXT_QOS)
        self.good_context = context_msg(100.0)
        self.context_paused = False
        node.create_timer(0.2, self._publish_context)
        self.impostor = node.create_publisher(PerformanceMetrics, f"{P}/metrics", METRICS_QOS)

    def _publish_context(self) -> None:
        if not self.context_paused:
            self.context.publish(self.good_context)

    @property
    def procs(self) -> list[NodeProcess]:
        return [self.perception.proc, self.evolution]

    def wait(self, predicate, what: str, timeout: float = 20.0) -> None:
        spin_until(self.node, predicate, timeout, what, self.procs)

    def evolution_counts(self) -> dict[str, str]:
        return self.evolution_diagnostics.values("evolution_node perception")

    def perception_counts(self) -> dict[str, str]:
        return self.perception_diagnostics.values("perception_node")

    def settled(self) -> None:
        """/adaspring/config, the evolution node and the perception node agree on the variant
        the policy picks for a 100 ms budget, with no call in flight."""
        def views():
            counts = self.evolution_counts()
            return (self.configs[-1].config_id if self.configs else None, counts.get("applied"),
                    self.perception.metrics[-1].config_id if self.perception.metrics else None)

        self.wait(lambda: views() == (self.mid,) * 3, f"agreement on {self.mid}", 60)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import rclpy

    from bench.bench_soak import prepare_backbone

    rclpy.init()
    node = rclpy.create_node("reliability_hostile")
    log_dir = tmp_path_factory.mktemp("hostile")
    backbone, _note = prepare_backbone(log_dir)
    g = Graph(node, log_dir, backbone)
    try:
        g.perception.ready()
        g.settled()
    except BaseException:  # leave no context behind for the next module's rclpy.init()
        for p in g.procs:
            p.kill()
        node.destroy_node()
        rclpy.try_shutdown()
        raise
    yield g
    codes = {p.name: p.stop() for p in g.procs}
    node.destroy_node()
    rclpy.try_shutdown()
    for p in g.procs:
        log = p.log_path.read_text()
        assert codes[p.name] == 0 and "Traceback" not in log, f"{p.name}:\n{log[-3000:]}"
        assert " failed (" not in log, f"a callback raised in {p.name}:\n{log[-3000:]}"


def frame(tag: str, stamp_sec: int = 0, stamp_nanosec: int = 0):
    from sensor_msgs.msg import Image

    from adaspring_ros import msg_convert

    msg = msg_convert.numpy_to_image(np.full((48, 64), 120, np.uint8), "mono8", Image)
    msg.header.frame_id = tag
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_sec, stamp_nanosec
    return msg


def peak_rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# 1 -----------------------------------------------------------------------------------------
def test_step_bomb_is_refused_and_decoding_costs_what_arrived(graph):
    from sensor_msgs.msg import Image

    p = graph.perception
    limit = int(open(f"/proc/{p.proc.proc.pid}/limits").read().split("Max address space")[1]
                .split()[0])
    assert limit == ADDRESS_SPACE  # the cap really applies to the node
    bombs = [
        # issue 18's repro: 1,920 bytes, header claiming 4 GiB (the node died with MemoryError)
        Image(height=1, width=640, encoding="rgb8", step=2**32 - 1, data=bytes(1920)),
        Image(height=2**32 - 1, width=1, encoding="mono8", step=1, data=bytes(64)),
        Image(height=1, width=2**31, encoding="mono8", step=2**32 - 1, data=bytes(64)),
        Image(height=2, width=640, encoding="bgra8", step=2**31, data=bytes(4096)),
    ]
    before = p.metrics[-1]
    copies = 0
    for i, msg in enumerate(bombs):
        msg.header.frame_id = f"bomb/{i}"
        after = p.send_image(msg)
        copies += p.last_copies
        assert after.frames_rejected - before.frames_rejected == copies, msg.header.frame_id
    assert "header claims 4294967295 bytes" in p.proc.output()
    # A 60 MB step (under the 64 MiB limit) over 1,920 bytes is a valid 1-row frame: it is
    # classified, and the node's peak RSS does not grow by the 60 MB the header implies.
    hwm = peak_rss_kb(p.proc.proc.pid)
    wide = Image(height=1, width=640, encoding="rgb8", step=60_000_000,
                 data=bytes(range(240)) * 8)
    wide.header.frame_id = "wide-step"
    p.send_image(wide)
    assert p.result_for("wide-step").config_id == graph.mid
    assert peak_rss_kb(p.proc.proc.pid) - hwm < 30_000, "decoding allocated by the header"
    p.send_image(frame("after-bombs"))
    assert p.result_for("after-bombs").config_id == graph.mid
    graph.wait(lambda: graph.perception_counts().get("callback_errors") == "0"
               and graph.perception_counts().get("frame_errors") == "0"
               and int(graph.perception_counts().get("frames_rejected", 0)) >= copies,
               "clean counters on the perception node's /diagnostics")
    assert p.proc.alive()


def test_bytes_that_are_no_image_are_refused_and_counted(graph):
    """The node takes frames serialized and reads them in place: a publisher may send any
    bytes on the topic. Each is refused and counted, and the next frame is classified."""
    from rclpy.serialization import serialize_message

    p = graph.perception
    whole = serialize_message(frame("cut-short"))
    junk = [whole[:len(whole) // 2],                          # a frame cut short
            b"\x00\x01\x00\x00" + bytes(range(256)) * 3,      # little-endian CDR, no Image
            b"\x00\x00\x00\x00" + b"\xff" * 64,                # big-endian CDR of nothing
            b"\x07"]
    before = p.metrics[-1]
    copies = 0
    for data in junk:
        after = p.send_image(data)
        copies += p.last_copies
        assert after.frames_rejected - before.frames_rejected == copies, data[:8]
        assert after.frames_processed == before.frames_processed
    graph.wait(lambda: graph.perception_counts().get("last_rejection", "").startswith(
        "not a sensor_msgs/Image"), "the refusal's reason on /diagnostics")
    p.send_image(frame("after-junk"))
    assert p.result_for("after-junk").config_id == graph.mid
    assert p.proc.alive()


# 2 -----------------------------------------------------------------------------------------
INFINITE_CONTEXTS = [
    ("battery_seconds_left", math.inf), ("memory_available_mb", math.inf),
    ("cpu_frequency_mhz", math.inf), ("battery_percent", math.inf),
    ("cpu_temperature_c", -math.inf), ("latency_budget_ms", math.inf),
    ("cpu_load_percent", -math.inf), ("memory_available_mb", 1e30),
    ("battery_seconds_left", 3e38), ("cpu_frequency_mhz", 1e12),
]


def test_infinite_context_readings_are_counted_and_never_swap(graph):
    import copy

    g = graph
    before = g.evolution_counts()
    n_configs = len(g.configs)
    g.context_paused = True  # one message at a time: keep-last-1 must not overwrite one
    try:
        rejected = int(before["context_rejected"])
        for name, value in INFINITE_CONTEXTS:
            msg = copy.deepcopy(g.good_context)
            setattr(msg, name, value)
            g.context.publish(msg)
            rejected += 1
            g.wait(lambda n=rejected: int(g.evolution_counts()["context_rejected"]) >= n,
                   f"ContextState {name}={value} counted in context_rejected")
            assert int(g.evolution_counts()["context_rejected"]) == rejected
    finally:
        g.context_paused = False
    spin_for(g.node, 1.0)
    after = g.evolution_counts()
    assert len(g.configs) == n_configs, [c.reason for c in g.configs[n_configs:]]
    assert (after["swaps"], after["applied"]) == (before["swaps"], before["applied"]), \
        g.evolution.output()[-3000:]
    assert "battery_seconds_left must be a finite number" in g.evolution.output()


# 3 -----------------------------------------------------------------------------------------
def test_forged_metrics_are_counted_ignored_and_swap_counters_agree(graph):
    from adaspring_ros.msg import PerformanceMetrics

    g = graph
    g.settled()
    g.wait(lambda: g.impostor.get_subscription_count() > 0, "the metrics subscription")
    before = g.evolution_counts()
    n_configs = len(g.configs)
    swaps_before = g.perception.fresh_metrics().swaps
    now = g.node.get_clock().now().nanoseconds
    last_swap = g.configs[-1].header.stamp

    def forged(config_id: str, stamp_ns: int | None, **floats) -> PerformanceMetrics:
        msg = PerformanceMetrics(config_id=config_id, model_latency_ms_p50=0.01,
                                 model_latency_ms_p95=0.01, swaps=999, **floats)
        if stamp_ns is None:  # just before the last swap
            msg.header.stamp = last_swap
            msg.header.stamp.nanosec = max(0, msg.header.stamp.nanosec - 1000)
        else:
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        return msg

    hour = 3600 * 10**9
    outside = "r20-w50d2ck50f-w50d2ck50f-w50d2ck50f"
    assert outside not in (g.full, g.fast, g.mid)
    attacks = [
        forged("r28-w100d3ck100f", now),  # not a variant at all
        forged(outside, now),  # a variant, but not one the evolution node would apply
        forged(g.full, now + hour),  # another variant from the future
        forged(g.fast, now - hour),  # from long ago
        forged(g.full, None),  # from before the last swap
        forged(g.full, 0),  # not stamped
        forged(g.mid, now, end_to_end_latency_ms_p95=math.inf),  # plausible but for the stamp
    ]
    attacks[-1].header.stamp.sec = -5
    # Another variant with a plausible stamp: the evolution node asks the perception node,
    # which served mid all along; the claim is counted as rejected, and so is every repeat.
    attacks += [forged(g.fast, now + i * 10**6) for i in range(8)]
    for msg in attacks:
        g.impostor.publish(msg)
        spin_for(g.node, 0.1)

    def ignored(counts) -> int:
        return int(counts.get("metrics_rejected", 0)) + int(counts.get("metrics_stale", 0))

    g.wait(lambda: ignored(g.evolution_counts()) >= ignored(before) + len(attacks),
           "every forged message counted")
    spin_for(g.node, 2.0)  # nothing more follows: no re-publication, no swap
    after = g.evolution_counts()
    assert ignored(after) == ignored(before) + len(attacks), (before, after)
    # Only the one from before the last swap and repeats arriving while the perception node
    # was asked may count as stale.
    assert int(after["metrics_rejected"]) >= int(before["metrics_rejected"]) + 7
    assert len(g.configs) == n_configs, [c.reason for c in g.configs[n_configs:]]
    assert after["applied"] == g.mid and g.perception.fresh_metrics().config_id == g.mid
    # The perception node performed exactly the swaps the evolution node counts.
    perception_swaps = g.perception.fresh_metrics().swaps
    assert perception_swaps == swaps_before == int(after["swaps"]) == int(before["swaps"])
    assert int(after["reapplied"]) <= int(before["reapplied"]) + 1
    assert f"served {g.mid} already" in g.evolution.output()


# 4 -----------------------------------------------------------------------------------------
def test_impossible_image_stamps_are_counted_and_left_out_of_the_latency(graph):
    g = graph
    p = g.perception
    now_s = g.node.get_clock().now().nanoseconds // 10**9
    cases = {  # tag: (sec, nanosec, counted as a bad stamp)
        "negative": (-5, 0, True),
        "far-future": (now_s + 10**6, 0, True),
        "far-past": (1, 0, True),
        "beyond-tolerance": (now_s + int(STAMP_TOLERANCE_S) + 60, 0, True),
        "bad-nanosec": (now_s, 2 * 10**9, True),
        "unstamped": (0, 0, False),
        "now": (now_s, 0, False),
    }
    before = int(g.perception_counts().get("stamps_rejected", 0))
    start = len(p.metrics)
    bad = 0
    for tag, (sec, nanosec, counted) in cases.items():
        if tag == "now":  # the clock moved on while the frames above were sent; to the ns, or
            # the truncated second would read as up to 1 s of latency, a deadline miss
            sec, nanosec = divmod(g.node.get_clock().now().nanoseconds, 10**9)
        p.send_image(frame(f"stamp/{tag}", sec, nanosec))
        bad += counted * p.last_copies
        r = p.result_for(f"stamp/{tag}")  # classified all the same, stamp copied as is
        assert (r.header.stamp.sec, r.header.stamp.nanosec) == (sec, nanosec)
    g.wait(lambda: int(g.perception_counts().get("stamps_rejected", 0)) == before + bad,
           f"stamps_rejected + {bad}")
    p.fresh_metrics()
    p.fresh_metrics()  # every window of the frames above has been reported
    e2e = [m.end_to_end_latency_ms_p95 for m in p.metrics[start:]]
    assert all(math.isnan(v) or abs(v) <= STAMP_TOLERANCE_S * 1e3 for v in e2e), e2e
    assert any(math.isfinite(v) for v in e2e)  # the good frame's latency is measured
    # The deadline feedback (on in this graph) saw no miss: the variant stays.
    assert g.evolution_counts()["applied"] == g.mid
    assert "image stamp left out of the latency" in p.proc.output()


# 5 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_id, reason", [
    ("r²8-w100d3ck100f-w100d3ck100f-w100d3ck100f", "non-ASCII character(s) '²'"),
    ("r28-w١00d3ck100f-w100d3ck100f-w100d3ck100f", "non-ASCII character(s) '١'"),
    ("r" + "9" * 5000 + "-w100d3ck100f", "longer than any valid one"),
])
def test_config_id_with_non_ascii_digits_is_an_invalid_request(graph, config_id, reason):
    from adaspring_ros.msg import CompressionConfig as ConfigMsg
    from adaspring_ros.srv import Reconfigure

    p = graph.perception
    before = p.fresh_metrics()
    request = Reconfigure.Request(config=ConfigMsg(config_id=config_id))
    reply = call_service(graph.node, p.client, request, "the Reconfigure reply", [p.proc])
    assert not reply.success and not reply.swapped
    assert reply.message.startswith(f"invalid request, still serving {before.config_id}")
    assert reason in reply.message and "could not build" not in reply.message
    graph.wait(lambda: p.metrics[-1].reconfigure_rejected == before.reconfigure_rejected + 1,
               "reconfigure_rejected + 1")
    assert p.metrics[-1].config_id == before.config_id


def test_no_callback_failed_anywhere(graph):
    """Everything above was refused by validation, not caught as an accident."""
    graph.wait(lambda: graph.perception_counts().get("callback_errors") == "0"
               and graph.evolution_counts().get("callback_errors") == "0",
               "callback_errors = 0 on both nodes")
