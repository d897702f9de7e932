"""The context node over real DDS (scenario, BatteryState, run-time parameters, bad input) and the
ContextState / BatteryState converters it relies on."""

from __future__ import annotations

import math

import pytest
from ros_harness import NodeProcess, spin_until

pytestmark = pytest.mark.ros

NAN = float("nan")


def battery(percentage: float, status: int = 2, **fields):
    from sensor_msgs.msg import BatteryState

    msg = BatteryState(percentage=percentage, power_supply_status=status, present=True)
    for name in ("voltage", "current", "charge", "capacity", "design_capacity"):
        setattr(msg, name, fields.get(name, NAN))
    return msg


# -- converters ------------------------------------------------------------------------------
def test_context_round_trip_keeps_unknown_as_nan():
    from adaspring_ros.msg import ContextState

    from adaspring_ros import msg_convert
    from adaspring_ros.core.policy.context import Context

    context = Context(battery_percent=42.0, cpu_load_percent=30.0, cpu_load_other_percent=12.5,
                      memory_available_mb=900.0, latency_budget_ms=25.0, source="test")
    msg = msg_convert.context_to_msg(context, ContextState)
    assert math.isnan(msg.battery_seconds_left) and math.isnan(msg.cpu_temperature_c)
    back = msg_convert.context_from_msg(msg)
    assert back.battery_seconds_left is None and back.cpu_temperature_c is None
    assert (back.battery_percent, back.latency_budget_ms, back.source) == (42.0, 25.0, "test")


@pytest.mark.parametrize("field,value", [
    ("latency_budget_ms", NAN), ("latency_budget_ms", 0.0), ("cpu_load_percent", 140.0),
    ("battery_percent", -3.0), ("cpu_load_other_percent", NAN),
])
def test_context_from_msg_rejects_bad_fields(field, value):
    from adaspring_ros.msg import ContextState

    from adaspring_ros import msg_convert

    msg = ContextState(latency_budget_ms=20.0, source="bad")
    setattr(msg, field, value)
    with pytest.raises(msg_convert.ContextError, match=field):
        msg_convert.context_from_msg(msg)


def test_battery_from_msg():
    from adaspring_ros import msg_convert

    reading = msg_convert.battery_from_msg(battery(0.5, current=-2.0, charge=1.0))
    assert reading.percent == pytest.approx(50.0) and not reading.charging
    assert reading.seconds_left == pytest.approx(1800.0)
    derived = msg_convert.battery_from_msg(battery(NAN, status=1, charge=1.5, capacity=2.0))
    assert derived.percent == pytest.approx(75.0) and derived.charging
    absent = battery(0.5)
    absent.present = False
    assert msg_convert.battery_from_msg(absent).percent is None
    for bad in (battery(NAN), battery(1.5), battery(0.5, voltage=math.inf),
                battery(0.5, status=9), battery(-0.2)):
        with pytest.raises(msg_convert.ContextError):
            msg_convert.battery_from_msg(bad)


# -- the node --------------------------------------------------------------------------------
def start_context(tmp_path, *params: str) -> NodeProcess:
    ros_args = []
    for p in ("rate_hz:=20.0", *params):
        ros_args += ["-p", p]
    return NodeProcess.module("adaspring_ros.nodes.context_node", tmp_path, ros_args=ros_args)


def listen(node):
    from adaspring_ros.msg import ContextState

    from adaspring_ros.nodes.qos import CONTEXT_QOS

    received = []
    node.create_subscription(ContextState, "/adaspring/context", received.append, CONTEXT_QOS)
    return received


def test_scenario_plays_from_node_start(rclpy_node, tmp_path):
    import time

    received = listen(rclpy_node)
    # mixed.yaml tightens the budget from 20 to 8 ms at t = 40 s: at 10x that is 4 s after
    # t = 0, which is put 3 s after now so discovery cannot miss the start.
    proc = start_context(tmp_path, "source:=scenario", "scenario:=scenarios/mixed.yaml",
                         "time_scale:=10.0", f"start_time_unix:={time.time() + 3.0}")
    try:
        spin_until(rclpy_node, lambda: received and received[-1].latency_budget_ms == 8.0, 20,
                   "the scenario's budget change", [proc])
    finally:
        proc.stop()
    first = received[0]
    assert first.source == "scenario:mixed" and first.latency_budget_ms == 20.0
    assert math.isnan(first.cpu_frequency_mhz)  # the trace does not say: unknown, not invented
    batteries = [m.battery_percent for m in received]
    assert batteries == sorted(batteries, reverse=True) and batteries[-1] < batteries[0]


def test_battery_state_source_rejects_bad_readings(rclpy_node, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import BatteryState

    from adaspring_ros.nodes.qos import SENSOR_QOS

    received = listen(rclpy_node)
    diagnostics = []
    rclpy_node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    publisher = rclpy_node.create_publisher(BatteryState, "/test_battery", SENSOR_QOS)
    proc = start_context(tmp_path, "source:=battery_state", "battery_topic:=/test_battery")
    try:
        spin_until(rclpy_node, lambda: received, 20, "a context", [proc])
        assert math.isnan(received[-1].battery_percent)  # no reading yet: unknown
        spin_until(rclpy_node, lambda: publisher.get_subscription_count() > 0, 10,
                   "the battery subscription", [proc])
        def send(msg, until):
            timer = rclpy_node.create_timer(0.05, lambda: publisher.publish(msg))
            try:
                spin_until(rclpy_node, until, 10, "the battery reading to be handled", [proc])
            finally:
                rclpy_node.destroy_timer(timer)

        send(battery(0.61), lambda: received[-1].battery_percent == pytest.approx(61.0))
        for bad in (battery(NAN), battery(1.7), battery(0.3, voltage=math.inf)):
            before = rejected_count(diagnostics)
            send(bad, lambda: rejected_count(diagnostics) > before)  # noqa: B023
            assert received[-1].battery_percent == pytest.approx(61.0)  # kept, not replaced
        assert received[-1].source == "psutil+battery_state"
    finally:
        proc.stop()
    assert "rejected BatteryState" in proc.log_path.read_text()


def rejected_count(diagnostics) -> int:
    for array in reversed(diagnostics):
        for status in array.status:
            if status.name.endswith("context_node"):
                values = {kv.key: kv.value for kv in status.values}
                return int(values.get("battery_rejected", 0))
    return 0


def test_latency_budget_changes_at_run_time(rclpy_node, tmp_path):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    received = listen(rclpy_node)
    proc = start_context(tmp_path, "latency_budget_ms:=50.0")
    client = AsyncParameterClient(rclpy_node, "context_node")
    try:
        spin_until(rclpy_node, lambda: received, 20, "a context", [proc])
        assert received[-1].latency_budget_ms == 50.0 and received[-1].source == "psutil"
        assert 0.0 <= received[-1].cpu_load_percent <= 100.0
        future = client.set_parameters([Parameter("latency_budget_ms", value=12.5),
                                        Parameter("rate_hz", value=500.0),
                                        Parameter("source", value="scenario")])
        spin_until(rclpy_node, future.done, 10, "SetParameters reply", [proc])
        results = future.result().results
        assert [r.successful for r in results] == [True, False, False]  # range; read-only
        spin_until(rclpy_node, lambda: received[-1].latency_budget_ms == 12.5, 10,
                   "the new budget", [proc])
    finally:
        proc.stop()


def test_bad_scenario_fails_at_start_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {t: 0, latency_budget_ms: 20}\n  - {t: 5, battery_percent: 140}\n")
    proc = start_context(tmp_path, "source:=scenario", f"scenario:={bad}")
    try:
        code = proc.proc.wait(30)
    finally:
        proc.stop()
    log = proc.log_path.read_text()
    assert code == 2 and "bad.yaml" in log and "battery_percent" in log, log
