"""FrameThread with real rclpy entities over real DDS: messages are taken on the frame thread,
in order, with their MessageInfo; the executor never takes them, and a callback that blocks the
executor does not stop them; stop() ends the loop and removes the subscription.
"""

from __future__ import annotations

import threading
import time

import pytest
from ros_harness import spin_until

pytestmark = pytest.mark.ros


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_messages_are_taken_on_the_frame_thread_and_never_by_the_executor(rclpy_node):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from std_msgs.msg import String

    from adaspring_ros.nodes.frame_thread import FrameThread

    node = rclpy.create_node("frames_owner")
    seen: list[tuple[str, dict, str]] = []

    def callback(msg, info):
        seen.append((msg.data, info, threading.current_thread().name))

    frames = FrameThread(node, String, "/frame_thread_test", callback, QoSProfile(depth=50))
    assert [s.topic_name for s in node.subscriptions] == ["/frame_thread_test"]
    publisher = rclpy_node.create_publisher(String, "/frame_thread_test", QoSProfile(depth=50))
    spin_until(rclpy_node, lambda: publisher.get_subscription_count() == 1, 10.0,
               "the frame thread's subscription to match")

    # The executor spins the owner node in this thread meanwhile: it must take nothing.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    blocked = threading.Event()
    node.create_timer(0.01, lambda: blocked.wait(0.5))  # an executor stuck in a callback
    for i in range(20):
        publisher.publish(String(data=str(i)))
    end = time.monotonic() + 10.0
    while len(seen) < 20 and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    assert [data for data, _, _ in seen] == [str(i) for i in range(20)]
    assert all(name.startswith("frames:") for _, _, name in seen)
    assert all(info["publication_sequence_number"] > 0 for _, info, _ in seen)
    assert all(info["received_timestamp"] >= info["source_timestamp"] > 0 for _, info, _ in seen)

    # stop(): the loop ends and the subscription goes; nothing more arrives.
    frames.stop()
    assert not frames._thread.is_alive()
    assert list(node.subscriptions) == []
    publisher.publish(String(data="late"))
    spin_until(rclpy_node, lambda: publisher.get_subscription_count() == 0, 10.0,
               "the subscription to go")
    time.sleep(0.2)
    assert len(seen) == 20
    executor.shutdown()
    node.destroy_node()


def test_a_blocked_executor_does_not_hold_frames_back(rclpy_node):
    """The perception node's Reconfigure builds a variant on the executor thread: frames keep
    coming meanwhile."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from std_msgs.msg import String

    from adaspring_ros.nodes.frame_thread import FrameThread

    node = rclpy.create_node("frames_blocked")
    seen: list[str] = []
    frames = FrameThread(node, String, "/frame_thread_blocked", lambda m, i: seen.append(m.data),
                         QoSProfile(depth=50))
    release = threading.Event()
    node.create_timer(0.01, lambda: release.wait(30.0))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin_once, kwargs={"timeout_sec": 5.0})
    spinner.start()  # enters the timer callback and stays there until released
    publisher = rclpy_node.create_publisher(String, "/frame_thread_blocked", QoSProfile(depth=50))
    spin_until(rclpy_node, lambda: publisher.get_subscription_count() == 1, 10.0,
               "the frame thread's subscription to match")
    try:
        for i in range(5):
            publisher.publish(String(data=str(i)))
        _wait(lambda: len(seen) == 5, 10.0, "frames while the executor is blocked")
        assert spinner.is_alive()  # still in the callback: the frames did not need it
    finally:
        release.set()
        spinner.join(10.0)
        frames.stop()
        executor.shutdown()
        node.destroy_node()


def test_the_loop_ends_with_the_context(rclpy_node):
    import rclpy
    from rclpy.qos import QoSProfile
    from std_msgs.msg import String

    from adaspring_ros.nodes.frame_thread import FrameThread

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("frames_context", context=context)
    frames = FrameThread(node, String, "/frame_thread_context", lambda m, i: None,
                         QoSProfile(depth=1))
    assert frames._thread.is_alive()
    rclpy.shutdown(context=context)
    frames._thread.join(5.0)
    assert not frames._thread.is_alive()
    frames.stop()  # after the context: nothing left to destroy, no error
