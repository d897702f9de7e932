"""context_node: publishes the device and application context as adaspring_ros/ContextState.

One source, chosen by the ``source`` parameter:
  psutil         this machine: CPU load, memory, and battery / CPU frequency / temperature only
                 where the OS exposes them;
  battery_state  psutil, with the battery taken from sensor_msgs/BatteryState on
                 ``battery_topic`` (SENSOR_QOS); readings with NaN/inf or out-of-range values are
                 rejected (throttled log line, counter in /diagnostics);
  scenario       a timed trace (config/scenarios/*.yaml); its time runs from node start (or
                 from ``start_time_unix``), ``time_scale`` times faster, optionally looping.
Readings nobody can make are published as NaN, never invented. The sampling and the trace live in
adaspring_ros.core.policy.context; this node only times, converts and publishes.
"""

from __future__ import annotations

import math
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import BatteryState

from adaspring_ros import msg_convert
from adaspring_ros.core.policy.context import BatteryReading, Context
from adaspring_ros.core.policy.psutil_source import PsutilSource
from adaspring_ros.core.policy.scenario import ScenarioTrace, resolve_scenario
from adaspring_ros.msg import ContextState
from adaspring_ros.nodes.common import diagnostic_array, diagnostic_status, run
from adaspring_ros.nodes.guard import CallbackGuard
from adaspring_ros.nodes.params import declare, invalid_choice, parameter_table
from adaspring_ros.nodes.qos import (
    CONTEXT_QOS,
    CONTEXT_TOPIC,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    SENSOR_QOS,
)
from adaspring_ros.nodes.settings import NODE_SETTINGS

PARAMETERS = parameter_table(*NODE_SETTINGS["context_node"])


class ContextNode(Node):
    """Samples one context source at ``rate_hz`` and publishes it on /adaspring/context."""

    def __init__(self) -> None:
        super().__init__("context_node")
        self.guard = CallbackGuard(self)
        declare(self, NODE_SETTINGS["context_node"])
        self.source = self.get_parameter("source").value
        problem = invalid_choice(NODE_SETTINGS["context_node"], {"source": self.source})
        if problem:
            raise ValueError(problem)
        self.add_post_set_parameters_callback(self.guard(self.apply_parameters_callback))

        self.started = time.monotonic()
        self.trace: ScenarioTrace | None = None
        self.psutil: PsutilSource | None = None
        self.battery: tuple[BatteryReading, float] | None = None  # reading, monotonic time
        self.counts = {"published": 0, "battery_rejected": 0, "sample_errors": 0}
        self.ended_logged = False
        if self.source == "scenario":
            path = resolve_scenario(self.get_parameter("scenario").value)
            self.trace = ScenarioTrace.load(path)  # ScenarioError names file, step and field
            what = f"scenario {self.trace.name!r} ({path}, {self.trace.duration_s:g} s)"
        else:
            self.psutil = PsutilSource()
            what = "psutil"
        self.battery_subscription = None
        if self.source == "battery_state":
            self.battery_subscription = self.create_subscription(
                BatteryState, self.get_parameter("battery_topic").value,
                self.guard(self.battery_callback), SENSOR_QOS)
            what += f" + battery from {self.battery_subscription.topic_name}"
        self.publisher = self.create_publisher(ContextState, CONTEXT_TOPIC, CONTEXT_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                           DIAGNOSTICS_QOS)
        self.timer = self.create_timer(1.0 / self.get_parameter("rate_hz").value,
                                       self.guard(self.sample_callback))
        self.diagnostics_timer = self.create_timer(1.0, self.guard(self.diagnostics_callback))
        self.get_logger().info(f"publishing the context from {what} at "
                               f"{self.get_parameter('rate_hz').value:g} Hz")
        self.guard(self.sample_callback)()  # t = 0 of a scenario goes out at once

    def apply_parameters_callback(self, params) -> None:
        if any(p.name == "rate_hz" for p in params):
            self.timer.timer_period_ns = int(1e9 / self.get_parameter("rate_hz").value)
            self.timer.reset()

    def scenario_time(self) -> float:
        """Seconds into the scenario: from node start, scaled, wrapped when looping."""
        origin = self.get_parameter("start_time_unix").value
        elapsed = time.time() - origin if origin > 0 else time.monotonic() - self.started
        t = max(elapsed, 0.0) * self.get_parameter("time_scale").value
        if self.get_parameter("loop").value and self.trace.duration_s > 0:
            return t % self.trace.duration_s
        if t > self.trace.duration_s and not self.ended_logged:
            self.ended_logged = True
            self.get_logger().info(f"scenario {self.trace.name!r} ended; holding its last step")
        return t

    def _sample(self) -> Context:
        if self.trace is not None:
            return self.trace.context_at(self.scenario_time(), timestamp=time.time())
        battery = None
        if self.source == "battery_state":
            # No recent valid reading: the battery is unknown (not the OS battery, not a guess).
            battery = BatteryReading(percent=None, charging=False)
            if self.battery is not None:
                reading, at = self.battery
                if time.monotonic() - at <= self.get_parameter("battery_timeout_s").value:
                    battery = reading
        return self.psutil.sample(self.get_parameter("latency_budget_ms").value, battery=battery)

    def sample_callback(self) -> None:
        try:
            context = self._sample()
        except Exception as exc:  # a sensor read failing must not stop the stream
            self.counts["sample_errors"] += 1
            self.get_logger().error(f"cannot sample the context: {exc}",
                                    throttle_duration_sec=5.0)
            return
        msg = msg_convert.context_to_msg(context, ContextState,
                                         stamp=self.get_clock().now().to_msg())
        self.publisher.publish(msg)
        self.counts["published"] += 1

    def battery_callback(self, msg: BatteryState) -> None:
        try:
            reading = msg_convert.battery_from_msg(msg)
        except msg_convert.ContextError as exc:
            self.counts["battery_rejected"] += 1
            self.get_logger().warning(
                f"rejected BatteryState ({self.counts['battery_rejected']} so far): {exc}",
                throttle_duration_sec=5.0)
            return
        self.battery = (reading, time.monotonic())

    def diagnostics_callback(self) -> None:
        level, message = DiagnosticStatus.OK, f"source {self.source}"
        values = {**self.counts, "callback_errors": self.guard.total}
        if self.trace is not None:
            values["scenario_time_s"] = f"{self.scenario_time():.1f}"
        if self.source == "battery_state":
            age = math.inf if self.battery is None else time.monotonic() - self.battery[1]
            values["battery_age_s"] = f"{age:.1f}"
            if age > self.get_parameter("battery_timeout_s").value:
                level = DiagnosticStatus.WARN
                message = "no valid BatteryState recently: battery published as unknown"
        self.diagnostics_publisher.publish(diagnostic_array(self, diagnostic_status(
            "adaspring: context_node", level, message, values, hardware_id="context")))


def main(args: list[str] | None = None) -> None:
    run(ContextNode, "context_node", args)  # bad source or scenario: exits 2

if __name__ == "__main__":
    main()
