"""Shared pieces of the fuzz tests at real nodes (test_fuzz_ros_*.py) and at the loaders
(test_fuzz_loaders.py): hypothesis settings, the input counter printed per module, the nodes under
test on private names, the strategies several modules draw from, and SetParameters fuzzing.

Every property runs with derandomize=True and a bounded max_examples (RELIABILITY_FUZZ_SCALE
multiplies them), so the files are fast and reproducible. The inputs tried per entry point are
printed as one summary line at the end of each module.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ros_harness import NodeProcess, PerceptionEnds, spin_until

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import CompressionConfig

PERCEPTION = "adaspring_ros.nodes.perception_node"
CONTEXT = "adaspring_ros.nodes.context_node"
EVOLUTION = "adaspring_ros.nodes.evolution_node"
SCALE = float(os.environ.get("RELIABILITY_FUZZ_SCALE", "1"))
# The perception node runs as on a robot with little memory: an allocation sized by a header
# field (issue 18's step bomb: 4 GiB from 1,920 bytes) fails there instead of succeeding here.
# The node itself needs about 1.5 GB of address space (torch, Fast DDS, its threads).
ADDRESS_SPACE = int(os.environ.get("RELIABILITY_FUZZ_ADDRESS_SPACE", str(3 << 30)))
TRIED: dict[str, int] = {}
NAN = float("nan")
U32 = 2**32 - 1
CONTEXT_FIELDS = ("battery_percent", "battery_seconds_left", "cpu_load_percent",
                  "cpu_load_other_percent", "memory_available_mb", "cpu_frequency_mhz",
                  "cpu_temperature_c", "latency_budget_ms")


def fuzz(examples: int):
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None,
                    derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def tried(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _summary(pytestconfig):
    TRIED.clear()  # this module's inputs only
    yield
    line = "reliability fuzz, inputs tried per entry point: " + json.dumps(TRIED, sort_keys=True)
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():  # shown even when pytest captures output
        print("\n" + line)


@pytest.fixture(scope="module")
def ros():
    import rclpy

    rclpy.init()
    node = rclpy.create_node("reliability_fuzz")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The backbone the perception node serves, and offline materialise() of it."""
    from bench.bench_soak import Reference, prepare_backbone

    path, _note = prepare_backbone(tmp_path_factory.mktemp("backbone"))
    ref = Reference(path)
    ref.path = path
    return ref


class Perception(PerceptionEnds):
    """A real perception_node on private names (``prefix``/...), and this process's ends of its
    image topic, results, metrics and Reconfigure service."""

    def __init__(self, node, log_dir: Path, backbone: Path, prefix: str, name: str,
                 extra: list[str] = (), address_space_bytes: int = 0) -> None:
        from sensor_msgs.msg import Image

        from adaspring_ros.nodes.qos import SENSOR_QOS

        super().__init__(node, prefix, f"{prefix}/reconfigure")
        self.log_dir, self.backbone = log_dir, backbone
        self.prefix, self.name, self.extra = prefix, name, list(extra)
        self.address_space_bytes = address_space_bytes
        self.restarts = 0
        self.proc = self._start()
        self.publisher = node.create_publisher(Image, f"{prefix}/image", SENSOR_QOS)
        self.published = 0
        self.first_copies = 0  # copies the first frame needed: those lost are never countable

    def _start(self) -> NodeProcess:
        p = self.prefix
        label = self.name if not self.restarts else f"{self.name}_{self.restarts}"
        args = ["-r", f"__node:={self.name}", "-r", f"/adaspring/result:={p}/result",
                "-r", f"/adaspring/metrics:={p}/metrics", "-r", f"/diagnostics:={p}/diagnostics",
                "-r", f"/adaspring/perception/reconfigure:={p}/reconfigure",
                "-p", f"image_topic:={p}/image", "-p", f"backbone_path:={self.backbone}",
                "-p", "metrics_period_s:=0.1", *self.extra]
        return NodeProcess.module(PERCEPTION, self.log_dir, label, ros_args=args,
                                  address_space_bytes=self.address_space_bytes)

    def restart(self) -> None:
        """SIGKILL the node (no clean shutdown) and start it again with the same parameters."""
        self.proc.kill()
        self.restarts += 1
        self.proc = self._start()

    def watched(self) -> list[NodeProcess]:
        return [self.proc]

    def ready(self) -> None:
        self.wait(self.client.service_is_ready, "the Reconfigure service", 60)
        self.wait(lambda: self.publisher.get_subscription_count() > 0, "the image subscription")
        self.fresh_metrics()

    def send_image(self, msg) -> object:
        """Publish ``msg`` until the node has received it and counted it; the metrics that do.

        Frames go one at a time, so the keep-last-1 queue never overwrites one. Large frames can
        be lost on the best-effort wire (the node counts those dropped once a later publication
        arrives), so the frame is sent again until it is received.
        """
        import rclpy

        before = self.metrics[-1].frames_received
        deadline = time.monotonic() + 30
        self.last_copies = 0
        while time.monotonic() < deadline:
            self.publisher.publish(msg)
            self.published += 1
            self.last_copies += 1
            sent = time.monotonic()
            while time.monotonic() - sent < 3.0:
                m = self.metrics[-1]
                if m.frames_received > before \
                        and m.frames_processed + m.frames_rejected == m.frames_received:
                    self.first_copies = self.first_copies or self.last_copies
                    return m
                if not self.proc.alive():
                    raise AssertionError(f"{self.name} died:\n{self.proc.output()[-3000:]}")
                rclpy.spin_once(self.node, timeout_sec=0.01)
        raise AssertionError(f"a {msg.width}x{msg.height} {msg.encoding!r} frame was never "
                             f"received and counted:\n{self.proc.output()[-3000:]}")

    def result_for(self, frame_id: str):
        self.wait(lambda: any(r.header.frame_id == frame_id for r in self.results),
                  f"the result of {frame_id}")
        return next(r for r in reversed(self.results) if r.header.frame_id == frame_id)

    def check_probe(self, reference, config_id: str | None, tag: str) -> None:
        """A replayed Fashion-MNIST frame is classified exactly as materialise(config_id) (None:
        by whichever variant the result names, when another node may swap meanwhile)."""
        msg = reference.frame(0)
        msg.header.frame_id = tag
        self.send_image(msg)
        r = self.result_for(tag)
        cls, score = reference(r.config_id, 0)
        assert r.config_id == (config_id or r.config_id) and r.class_id == cls
        assert abs(r.score - score) < 1e-4


def config_msg(config: CompressionConfig):
    from adaspring_ros.msg import CompressionConfig as ConfigMsg

    return msg_convert.config_to_msg(config, ConfigMsg)


STAMP_TOLERANCE_S = 10.0  # the nodes' default stamp_tolerance_s


class StampLike:
    def __init__(self, sec: int, nanosec: int) -> None:
        self.sec, self.nanosec = sec, nanosec


@st.composite
def stamps(draw, now_ns: int):
    """(sec, nanosec, bad): near the node's clock, unset, over the whole range, or just outside
    the tolerance; ``bad`` is whether the node must count it (never within a second of the
    tolerance's edge, so the clocks of this process and the node need not agree exactly)."""
    kind = draw(st.sampled_from(["now", "now", "zero", "random", "edge"]))
    if kind == "zero":
        return 0, 0, False
    if kind == "random":
        sec, nanosec = draw(st.integers(-2**31, 2**31 - 1)), draw(st.integers(0, U32))
    else:
        span = 1.0 if kind == "now" else STAMP_TOLERANCE_S + draw(st.floats(2.0, 1e6))
        offset = draw(st.floats(-span, span)) if kind == "now" else span * draw(
            st.sampled_from([-1, 1]))
        sec, nanosec = divmod(now_ns + int(offset * 1e9), 10**9)
    try:
        msg_convert.checked_stamp_ns(StampLike(sec, nanosec), now_ns,
                                     int(STAMP_TOLERANCE_S * 1e9))
        bad = False
    except msg_convert.StampError:
        bad = True
    ns = sec * 10**9 + nanosec
    assume(bad or abs(ns - now_ns) < (STAMP_TOLERANCE_S - 1.0) * 1e9)
    assume(not bad or abs(ns - now_ns) > (STAMP_TOLERANCE_S + 1.0) * 1e9 or ns <= 0
           or nanosec >= 10**9)
    return sec, nanosec, bad


FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
# Every float field of every message is also drawn from these: +-inf, NaN, negative, huge.
ODD_FLOATS = st.one_of(FLOATS, st.sampled_from([math.inf, -math.inf, NAN, -1.0, -1e30, 1e30,
                                                3.4e38, -0.0, 1e-45]))


def _odd_digits(config_id: str, digits: str) -> st.SearchStrategy:
    """``config_id`` with one ASCII digit replaced by a digit of another script (or a
    superscript): str.isdigit() accepts them, int() refuses or misreads them."""
    places = [i for i, c in enumerate(config_id) if c.isdigit()]
    return st.tuples(st.sampled_from(places), st.sampled_from(digits)).map(
        lambda t: config_id[:t[0]] + t[1] + config_id[t[0] + 1:])


ODD_DIGIT_IDS = st.one_of(
    _odd_digits(CompressionConfig.full().id, "²³¹⁰٢٨١۲８߂१"),
    _odd_digits(CompressionConfig.smallest().id, "²٢８"),
    st.integers(300, 5000).map(lambda n: "r" + "9" * n + "-w100d3ck100f"),
)


class Diagnostics:
    """The newest DiagnosticStatus values per status name on one topic."""

    def __init__(self, node, topic: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.arrays: list = []
        node.create_subscription(DiagnosticArray, topic, self.arrays.append, 10)

    def values(self, suffix: str) -> dict[str, str]:
        for array in reversed(self.arrays):
            for status in array.status:
                if status.name.endswith(suffix):
                    return {kv.key: kv.value for kv in status.values}
        return {}


class EvolutionUnderTest:
    """A real evolution_node on /fuzz_evo/... over the stand-in perception node of
    test_ros_evolution.py (it serves Reconfigure and publishes metrics from a 3-row table),
    so the real perception node's counters stay this module's own."""

    def __init__(self, node, log_dir: Path) -> None:
        import test_ros_evolution
        from adaspring_ros.msg import CompressionConfig as ConfigMsg
        from adaspring_ros.msg import ContextState

        from adaspring_ros.nodes.qos import CONFIG_QOS, CONTEXT_QOS

        self.node = node
        table, full, fast, self.settled = test_ros_evolution.write_table(log_dir)
        self.table_ids = (full, fast, self.settled)
        p = "/fuzz_evo"
        names = ["-r", f"/adaspring/metrics:={p}/metrics",
                 "-r", f"/adaspring/perception/reconfigure:={p}/reconfigure"]
        self.fake = NodeProcess([test_ros_evolution.__file__, "fake_perception", "--ros-args",
                                 "-r", "__node:=fuzz_fake_perception", *names,
                                 "-p", f"initial:={full}"], log_dir, "fuzz_fake_perception")
        self.proc = NodeProcess.module(EVOLUTION, log_dir, "fuzz_evolution", ros_args=[
            "-r", "__node:=fuzz_evolution", "-r", f"/adaspring/context:={p}/context",
            "-r", f"/adaspring/config:={p}/config", "-r", f"/diagnostics:={p}/diagnostics",
            *names, "-p", f"profile_table:={table}", *test_ros_evolution.FAST_POLICY,
            "-p", "diagnostics_period_s:=0.1", *test_ros_evolution.MID_POLICY,
            "-p", "stale_after_s:=10.0"])
        self.procs = [self.fake, self.proc]
        self.configs: list = []
        node.create_subscription(ConfigMsg, f"{p}/config", self.configs.append, CONFIG_QOS)
        self.context = node.create_publisher(ContextState, f"{p}/context", CONTEXT_QOS)
        self.diagnostics = Diagnostics(node, f"{p}/diagnostics")

    def wait(self, predicate, what: str, timeout: float = 20.0) -> None:
        spin_until(self.node, predicate, timeout, what, self.procs)

    def counts(self) -> dict[str, str]:
        return self.diagnostics.values("evolution_node perception")

    def call_idle(self) -> bool:
        """No Reconfigure in flight, by the evolution node's /diagnostics."""
        for array in reversed(self.diagnostics.arrays):
            for status in array.status:
                if status.name.endswith("evolution_node perception"):
                    return status.message.startswith("serving")
        return False


def spin_for(node, seconds: float, until=lambda: False) -> None:
    import rclpy

    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        rclpy.spin_once(node, timeout_sec=0.01)


class ContextUnderTest:
    """A real context_node (source battery_state) on /fuzz/ctx..., and this process's ends."""

    def __init__(self, node, log_dir: Path) -> None:
        from adaspring_ros.msg import ContextState
        from sensor_msgs.msg import BatteryState

        from adaspring_ros.nodes.qos import CONTEXT_QOS, SENSOR_QOS

        self.proc = NodeProcess.module(CONTEXT, log_dir, "fuzz_context", ros_args=[
            "-r", "__node:=fuzz_context", "-r", "/adaspring/context:=/fuzz/ctx",
            "-r", "/diagnostics:=/fuzz/ctx_diagnostics", "-p", "source:=battery_state",
            "-p", "battery_topic:=/fuzz/battery", "-p", "rate_hz:=50.0"])
        self.received: list = []
        node.create_subscription(ContextState, "/fuzz/ctx", self.received.append, CONTEXT_QOS)
        self.battery = node.create_publisher(BatteryState, "/fuzz/battery", SENSOR_QOS)
        self.diagnostics = Diagnostics(node, "/fuzz/ctx_diagnostics")


def same(a: float, b: float) -> bool:
    """Equal as float32 (the message type), NaN equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


def parameter_values(default, descriptor):
    """Random values of every parameter type, and values of the declared type: inside the
    declared range (so some are applied), around it, and plausible strings."""
    from rclpy.parameter import Parameter

    T = Parameter.Type
    anything = st.one_of(
        st.booleans().map(lambda v: (T.BOOL, v)),
        st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-3, 300)).map(
            lambda v: (T.INTEGER, v)),
        st.floats(allow_nan=True, allow_infinity=True).map(lambda v: (T.DOUBLE, v)),
        st.text(max_size=30).map(lambda v: (T.STRING, v)),
        st.lists(st.integers(-2**63, 2**63 - 1), max_size=3).map(lambda v: (T.INTEGER_ARRAY,
                                                                            v)),
        st.lists(st.floats(), max_size=3).map(lambda v: (T.DOUBLE_ARRAY, v)),
        st.lists(st.text(max_size=5), max_size=3).map(lambda v: (T.STRING_ARRAY, v)),
        st.lists(st.booleans(), max_size=3).map(lambda v: (T.BOOL_ARRAY, v)),
        st.lists(st.binary(min_size=1, max_size=1), max_size=3).map(lambda v: (T.BYTE_ARRAY,
                                                                              v)),
        st.just((T.NOT_SET, None)),
    )
    if isinstance(default, bool):
        inside = outside = st.booleans().map(lambda v: (T.BOOL, v))
    elif isinstance(default, int):
        low, high = -2, 2 * default + 2
        if descriptor is not None and descriptor.integer_range:
            r = descriptor.integer_range[0]
            low, high = r.from_value, r.to_value
        inside = st.integers(low, min(high, low + 1000)).map(lambda v: (T.INTEGER, v))
        outside = st.sampled_from([low - 1, high + 1, -2**63]).map(lambda v: (T.INTEGER, v))
    elif isinstance(default, float):
        low, high = -1.0, 3 * default + 1.0
        if descriptor is not None and descriptor.floating_point_range:
            r = descriptor.floating_point_range[0]
            low, high = r.from_value, r.to_value
        inside = st.one_of(st.floats(low, min(high, low + 100.0)), st.floats(low, high)).map(
            lambda v: (T.DOUBLE, v))
        outside = st.sampled_from([low - 1.0, high * 2 + 1.0, math.nan, -math.inf]).map(
            lambda v: (T.DOUBLE, v))
    else:
        inside = st.sampled_from(["", "raspberry_pi4", "jetson_nano_cpu", str(default)]).map(
            lambda v: (T.STRING, v))
        outside = st.sampled_from(["full", "smallest", "toaster", "r28-bogus", "/dev/null",
                                   "../../etc/passwd.yaml", CompressionConfig.smallest().id]).map(
            lambda v: (T.STRING, v))
    return st.sampled_from(["inside", "inside", "outside", "anything"]).flatmap(
        lambda kind: {"inside": inside, "outside": outside, "anything": anything}[kind])


def fuzz_parameters(ros, node_name: str, declared, procs, label: str, examples: int) -> None:
    from rclpy.parameter import Parameter, parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(ros, node_name)
    spin_until(ros, client.services_are_ready, 30, f"{node_name}'s parameter services", procs)

    def call(future, what: str):
        spin_until(ros, future.done, 20, what, procs)
        return future.result()

    def get(name: str):
        value = call(client.get_parameters([name]), f"get {name}").values[0]
        return parameter_value_to_python(value)

    defaults = {name: default for name, default, _ in declared}
    descriptors = {name: descriptor for name, _, descriptor in declared}
    # Read-only parameters refuse every value: fuzz the writable ones more.
    writable = sorted(n for n, d in descriptors.items() if not d.read_only)
    outcomes = {"applied": 0, "rejected": 0}
    reasons: list[str] = []

    @fuzz(examples)
    @given(data=st.data())
    def fuzz_one(data):
        tried(f"SetParameters -> {label}")
        name = data.draw(st.one_of(st.sampled_from(writable), st.sampled_from(writable),
                                   st.sampled_from(sorted(defaults)),
                                   st.sampled_from(["bogus", "use_sim_timex", ""])))
        type_, value = data.draw(parameter_values(defaults.get(name, 0.0),
                                                  descriptors.get(name)))
        old = get(name) if name in defaults else None
        result = call(client.set_parameters([Parameter(name, type_, value)]),
                      f"set {name}").results[0]
        if name not in defaults:
            # rclpy itself accepts (and stores) a parameter with an empty name; the nodes'
            # callbacks ignore names they do not know.
            assert name == "" or (not result.successful and result.reason), result
            return
        now = get(name)
        if not result.successful:
            outcomes["rejected"] += 1
            reasons.append(f"{name}={value!r}: {result.reason}")
            assert result.reason and same_value(now, old), (name, value, result.reason, now)
            return
        outcomes["applied"] += 1
        assert same_value(now, value), (name, value, now)
        if not same_value(now, old):  # put it back, so the node keeps its configuration
            restore = call(client.set_parameters([Parameter(name, value=old)]), "restore")
            assert restore.results[0].successful, restore.results[0].reason

    fuzz_one()
    assert outcomes["applied"] > 3 and outcomes["rejected"] > 3, (outcomes, reasons)
    assert all(p.alive() for p in procs)


def same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return list(a) == list(b) if isinstance(a, (list, tuple)) else a == b
