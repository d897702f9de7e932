"""CallbackGuard with real rclpy entities: an exception in a subscription, service, timer or
parameter callback is counted and logged once per period, and the executor keeps spinning.

Without the guard, rclpy re-raises a callback's exception out of spin() and the node exits
(issue 18: a MemoryError from one frame ended the perception node).
"""

from __future__ import annotations

import pytest
from ros_harness import spin_until

pytestmark = pytest.mark.ros


def test_exceptions_in_callbacks_are_counted_logged_and_never_fatal(rclpy_node):
    import rclpy
    from adaspring_ros.srv import Reconfigure as Trigger  # any service type will do
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.parameter import Parameter
    from std_msgs.msg import String

    from adaspring_ros.nodes.guard import CallbackGuard

    node = rclpy.create_node("guarded")
    logged: list[str] = []
    guard = CallbackGuard(node, log_period_s=3600.0)

    class Logger:  # records what the guard logs, so the throttle can be checked
        def error(self, text: str) -> None:
            logged.append(text)

    node.get_logger = Logger
    seen: list = []

    def image_callback(msg, info):  # two arguments: rclpy must still pass MessageInfo
        seen.append(info)
        raise MemoryError("a frame too large for this robot")

    def trigger_callback(request, response):
        response.message = "partly filled"
        raise RuntimeError("service broke")

    def validate_callback(params):
        raise ValueError("validator broke")

    node.create_subscription(String, "/guard_test", guard(image_callback), 10)
    node.create_service(Trigger, "/guard_test_srv", guard.service(trigger_callback))
    ticks = []

    def timer_callback():
        ticks.append(1)
        raise KeyError("timer broke")

    node.create_timer(0.02, guard(timer_callback))
    node.declare_parameter("x", 1)
    node.add_on_set_parameters_callback(guard.parameters(validate_callback))

    publisher = rclpy_node.create_publisher(String, "/guard_test", 10)
    client = rclpy_node.create_client(Trigger, "/guard_test_srv")
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(rclpy_node)
    try:
        spin_until(rclpy_node, lambda: (executor.spin_once(timeout_sec=0.01) or True)
                   and publisher.get_subscription_count() > 0, 10, "the subscription")
        for i in range(3):
            publisher.publish(String(data=str(i)))
        future = client.call_async(Trigger.Request())

        def done() -> bool:
            executor.spin_once(timeout_sec=0.01)  # raises if a callback's exception escapes
            return len(seen) == 3 and future.done() and len(ticks) >= 3

        spin_until(rclpy_node, done, 20, "every callback to run and fail")
        assert future.result().message == "partly filled"  # replied, not left to time out
        assert isinstance(seen[0], dict) and "publication_sequence_number" in seen[0]
        result = node.set_parameters([Parameter("x", value=2)])[0]
        assert not result.successful and result.reason
        assert isinstance(result, SetParametersResult) and node.get_parameter("x").value == 1
    finally:
        executor.remove_node(rclpy_node)
        node.destroy_node()
    assert guard.counts["image_callback"] == 3 and guard.counts["trigger_callback"] == 1
    assert guard.counts["validate_callback"] == 1 and guard.counts["timer_callback"] >= 3
    assert guard.total == sum(guard.counts.values())
    # One line per callback within the period, naming it and the exception.
    assert sorted(line.split()[0] for line in logged) == [
        "image_callback", "timer_callback", "trigger_callback", "validate_callback"]
    assert any("MemoryError" in line for line in logged)
