"""The evolution node over real DDS through config/scenarios/recoveries.yaml: battery jumps,
charger toggles, an impossible latency budget, memory just above and then below the reserve, a
saturated hot CPU, and the recoveries in between. Each phase ends on what the pure search
(``adaspring search`` for that context) chooses, within the accuracy floor unless only variants
below it fit.

This process publishes each phase's context (ScenarioTrace.context_at) and moves to the next phase
once the node reports, in /diagnostics, a "keep" decision for that context on the expected
variant, so a loaded machine makes the test slower, not flaky. A stand-in perception node (this
file run as a script) serves the shipped profile table: its metrics give each variant's table
latency plus the table's cold-start term, slowed by the phase's CPU load (1 + 2 x load/100), the
table's tail, and the table energy plus 0.5 mJ per frame.
"""

from __future__ import annotations

import sys
import time

import pytest
from ros_harness import NodeProcess, spin_until

pytestmark = pytest.mark.ros

SCENARIO = "scenarios/recoveries.yaml"
CONTENTION_PER_LOAD = 2.0
FRAME_REST_MJ = 0.5
# No headroom: the node then chooses exactly what the plain search does. Short intervals so that
# twelve phases take well under a minute.
POLICY = ["-p", "headroom:=0.0", "-p", "min_swap_interval_s:=1.0",
          "-p", "min_urgent_interval_s:=0.5", "-p", "settle_s:=0.3",
          "-p", "decision_period_s:=0.1", "-p", "diagnostics_period_s:=0.2"]


def phases():
    from adaspring_ros.core.policy.scenario import ScenarioTrace, resolve_scenario

    trace = ScenarioTrace.load(resolve_scenario(SCENARIO))
    return trace, [trace.context_at(t + 2.5) for t in range(0, int(trace.duration_s), 5)]


def expected(search, trace, context, mission_remaining_s: float):
    """What the pure search chooses for ``context`` with what the stand-in reports."""
    contention = 1.0 + CONTENTION_PER_LOAD * context.cpu_load_other_percent / 100.0
    return search.decide(context, budget_params=trace.budget_params(), contention=contention,
                         tail=search.tail_ratio, mission_remaining_s=mission_remaining_s,
                         overhead_mj=FRAME_REST_MJ)


def settled_on(search, result, served: str, gain_threshold: float) -> bool:
    """The node serves the search's choice, or one as good within the hysteresis."""
    if served == result.config_id:
        return True
    if served not in search or not result.feasible:
        return False
    mine = search.predict(served, result.budgets, result.lambdas, result.contention,
                          result.tail, result.overhead_mj)
    return mine.feasible and mine.objective >= result.prediction.objective - gain_threshold


def test_every_phase_of_the_recoveries_scenario_ends_on_the_pure_search_choice(rclpy_node,
                                                                               tmp_path):
    from adaspring_ros.msg import CompressionConfig, ContextState
    from diagnostic_msgs.msg import DiagnosticArray

    from adaspring_ros import msg_convert
    from adaspring_ros.core.model.profile_table import load_profile_table
    from adaspring_ros.core.policy.evolution import KINDS
    from adaspring_ros.core.policy.search import RuntimeSearch
    from adaspring_ros.nodes.qos import CONFIG_QOS, CONTEXT_QOS

    trace, contexts = phases()
    search = RuntimeSearch(load_profile_table())
    budgets = [arg for name, value in trace.budgets.items()
               for arg in ("-p", f"{name}:={float(value)}")]
    configs, status = [], {}
    current = {"msg": None}

    def on_diagnostics(array) -> None:
        for s in array.status:
            if s.name.endswith("evolution_node context"):
                status.update({kv.key: kv.value for kv in s.values})

    rclpy_node.create_subscription(CompressionConfig, "/adaspring/config", configs.append,
                                   CONFIG_QOS)
    rclpy_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    publisher = rclpy_node.create_publisher(ContextState, "/adaspring/context", CONTEXT_QOS)
    rclpy_node.create_timer(0.1, lambda: current["msg"] is not None
                            and publisher.publish(current["msg"]))
    started = time.monotonic()
    procs = [NodeProcess([__file__, "fake_perception"], tmp_path, "fake_perception"),
             NodeProcess.module("adaspring_ros.nodes.evolution_node", tmp_path,
                                "evolution_node", ros_args=[*POLICY, *budgets])]
    gain_threshold = 0.15
    try:
        for i, context in enumerate(contexts):
            current["msg"] = msg_convert.context_to_msg(context, ContextState)
            what = context.describe()

            def done(context=context, what=what) -> bool:
                if status.get("policy_context") != what or \
                        status.get("policy_last_decision") != "keep":
                    return False
                remaining = trace.budget_params().mission_duration_s - (time.monotonic()
                                                                         - started)
                result = expected(search, trace, context, remaining)
                return settled_on(search, result, status["policy_active"], gain_threshold)

            spin_until(rclpy_node, done, 60 if i == 0 else 30,
                       f"phase {i} ({what}): a keep on the search's choice (node: "
                       f"{status.get('policy_active')}, {status.get('policy_last_decision')})",
                       procs)
            result = expected(search, trace, context, 1800.0 - (time.monotonic() - started))
            served = search.entries[search.row(status["policy_active"])]
            if result.rule != "forced-below-floor":
                assert served.accuracy >= search.floor - 1e-9, (i, what, served.id)
    finally:
        for p in procs:
            p.stop()
    assert configs, "no /adaspring/config"
    for msg in configs[1:]:
        kind = msg.reason.split(":", 1)[0]
        assert kind in KINDS and kind not in ("keep", "hold", "wait"), msg.reason
    # no swap to the table's smallest variants (memory below the reserve), the end on the best
    final = search.entries[search.row(configs[-1].config_id)]
    assert final.id == search.reference.id, configs[-1].reason
    assert min(search.entries[search.row(m.config_id)].accuracy for m in configs) >= 0.85


# -- the stand-in perception node ------------------------------------------------------------
def fake_perception() -> None:
    import rclpy
    from adaspring_ros.msg import CompressionConfig as ConfigMsg
    from adaspring_ros.msg import ContextState, PerformanceMetrics
    from adaspring_ros.srv import Reconfigure
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node

    from adaspring_ros import msg_convert
    from adaspring_ros.core.model.profile_table import load_profile_table
    from adaspring_ros.core.policy.search import RuntimeSearch
    from adaspring_ros.nodes.qos import (
        CONTEXT_QOS,
        METRICS_QOS,
        METRICS_TOPIC,
        RECONFIGURE_SERVICE,
    )

    class FakePerception(Node):
        def __init__(self) -> None:
            super().__init__("fake_perception")
            table = load_profile_table()
            self.space = table.space
            self.search = RuntimeSearch(table)
            self.active = self.search.reference.config
            self.load = 0.0
            self.service = self.create_service(Reconfigure, RECONFIGURE_SERVICE,
                                               self.reconfigure_callback)
            self.publisher = self.create_publisher(PerformanceMetrics, METRICS_TOPIC,
                                                   METRICS_QOS)
            self.subscription = self.create_subscription(ContextState, "/adaspring/context",
                                                         self.context_callback, CONTEXT_QOS)
            self.timer = self.create_timer(0.25, self.metrics_callback)

        def context_callback(self, msg) -> None:
            self.load = msg.cpu_load_other_percent

        def reconfigure_callback(self, request, response):
            wanted = msg_convert.config_from_msg(request.config, self.space)
            response.swapped = wanted != self.active
            self.active = wanted
            response.success, response.swap_ms = True, 0.5
            response.active = msg_convert.config_to_msg(self.active, ConfigMsg)
            return response

        def metrics_callback(self) -> None:
            row = self.search.row(self.active.id)
            p50 = (float(self.search.latency_p50[row]) + self.search.cold_ms) * \
                (1 + CONTENTION_PER_LOAD * self.load / 100)
            msg = msg_convert.metrics_to_msg(
                {"config_id": self.active.id, "model_latency_ms_p50": p50,
                 "model_latency_ms_p95": p50 * self.search.tail_ratio,
                 "energy_per_frame_mj": float(self.search.energy[row]) + FRAME_REST_MJ},
                PerformanceMetrics)
            msg.header.stamp = self.get_clock().now().to_msg()
            self.publisher.publish(msg)

    try:
        with rclpy.init():
            rclpy.spin(FakePerception())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__" and sys.argv[1:2] == ["fake_perception"]:
    fake_perception()
