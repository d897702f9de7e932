"""Helpers for tests that run real rclpy nodes in separate processes over real DDS on loopback.

Each test module gets a ROS_DOMAIN_ID of its own and localhost-only discovery (set by conftest.py
before any rclpy.init), so modules, and parallel runs on one machine, do not see each other. Tests
wait on matched counts, futures and messages with timeouts, never on bare sleeps. The process and
spin helpers are the package's own (adaspring_ros/demo/graph.py), shared with the demo and the
benchmarks.
"""

from __future__ import annotations

import signal
import time

from adaspring_ros.demo import graph as processes
from adaspring_ros.demo.graph import spin_until  # noqa: F401  (the tests import it from here)

REPO = processes.SOURCE_ROOT


class NodeProcess(processes.ChildProcess):
    """A test's child node: SIGKILLed with the test process, so a killed run leaves no node
    behind in a later run's graph."""

    death_signal = signal.SIGKILL


def spin_for(node, seconds: float) -> None:
    """Spin ``node`` for ``seconds`` (to see that something does NOT happen)."""
    import rclpy

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.02)


def call_service(node, client, request, what: str, procs: list[NodeProcess] = (),
                 attempts: int = 3, timeout: float = 10.0):
    """Call ``client`` and spin until the reply; the response, or fail with child logs.

    On a loaded machine the server can get the request before it has matched this client's
    reply reader, and Fast DDS then drops the reply ("failed to send response (timeout)"). A
    client cannot see that happen, so an unanswered call is sent again, as the evolution node
    does; every request these tests send is idempotent.
    """
    spin_until(node, client.service_is_ready, 60, f"the service for {what}", procs)
    futures = []
    for attempt in range(attempts):
        futures.append(client.call_async(request))
        try:
            spin_until(node, lambda: any(f.done() for f in futures), timeout,
                       f"{what} (try {attempt + 1} of {attempts})", procs)
        except AssertionError:
            if attempt == attempts - 1:
                raise
            continue
        return next(f for f in futures if f.done()).result()


def set_parameters(node, remote: str, values: dict, procs: list[NodeProcess]):
    """Set parameters of ``remote`` at run time; returns the SetParametersResult list."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(node, remote)
    spin_until(node, lambda: client.services_are_ready(), 15, f"{remote}'s parameter services",
               procs)
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    spin_until(node, future.done, 10, "the set_parameters reply", procs)
    return future.result().results


class PerceptionEnds:
    """This test process's ends of a perception node: its results, its metrics and its
    Reconfigure service under ``prefix`` (the node's defaults: "/adaspring")."""

    wait_timeout = 20.0

    def __init__(self, node, prefix: str = "/adaspring",
                 reconfigure: str = "/adaspring/perception/reconfigure") -> None:
        from adaspring_ros.msg import InferenceResult, PerformanceMetrics
        from adaspring_ros.srv import Reconfigure

        from adaspring_ros.nodes.qos import METRICS_QOS, RESULT_QOS

        self.node = node
        self.results: list = []
        self.metrics: list = []
        node.create_subscription(InferenceResult, f"{prefix}/result", self.results.append,
                                 RESULT_QOS)
        node.create_subscription(PerformanceMetrics, f"{prefix}/metrics", self.metrics.append,
                                 METRICS_QOS)
        self.client = node.create_client(Reconfigure, reconfigure)

    def watched(self) -> list[NodeProcess]:
        """The processes whose death fails a wait."""
        return []

    def wait(self, predicate, what: str, timeout: float | None = None, procs=()) -> None:
        spin_until(self.node, predicate, timeout or self.wait_timeout, what,
                   [*self.watched(), *procs])

    def results_after(self, count: int, what: str = "results") -> list:
        """The next ``count`` results (waits for them)."""
        start = len(self.results)
        self.wait(lambda: len(self.results) >= start + count, f"{count} {what}")
        return self.results[start:]

    def fresh_metrics(self):
        """The first PerformanceMetrics published after now."""
        start = len(self.metrics)
        self.wait(lambda: len(self.metrics) > start, "a PerformanceMetrics message")
        return self.metrics[-1]

    def reconfigure(self, config_msg):
        from adaspring_ros.srv import Reconfigure

        return call_service(self.node, self.client, Reconfigure.Request(config=config_msg),
                            "the Reconfigure reply", self.watched())
