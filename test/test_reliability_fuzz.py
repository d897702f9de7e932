"""Fuzzing (hypothesis) of every entry point that takes outside data, at the real entry point.

test_fuzz_inputs.py fuzzes the pure decoders in this process; here the inputs go where a robot's
drivers and operators send them:

* sensor_msgs/Image published at a real perception_node running under a 3 GiB address-space cap
  (RLIMIT_AS, as on a small robot), Reconfigure requests sent to it: it stays up, every bad input
  moves exactly one PerformanceMetrics counter (frames_rejected, reconfigure_rejected), every
  good one gives a result equal to materialise(config) offline, and afterwards a probe frame and
  a valid Reconfigure still work. Header fields (height, width, step) are also drawn over their
  whole range independently of the data that travels, stamps from negative to far future (a
  stamp that cannot be right is counted in stamps_rejected and never reaches the latency);
* ContextState at a real evolution_node (counted as context_rejected, never a swap; every float
  field also drawn as +-inf, NaN, negative and huge, and anything non-finite must be refused),
  PerformanceMetrics at it (every float field likewise, stamps from negative to far future,
  variants outside the table, metrics impersonating the serving node: those that cannot be from
  it are counted, and its swap counter stays equal to the perception side's) and BatteryState
  at a real context_node (counted as battery_rejected, the last good reading kept);
* SetParameters with random names, types and values at the perception, context and evolution
  nodes: each is rejected or applied (and reads back as such), never a crash;
* scenario files, profile tables and weight files (truncated, bytes flipped, wrong checksum,
  wrong shapes) at core.context.ScenarioTrace.load, ProfileTable.load and supernet.load_backbone:
  a clear error of the loader's own type naming the problem.

Every property runs with derandomize=True and a bounded max_examples (RELIABILITY_FUZZ_SCALE
multiplies them), so the file is fast and reproducible. The inputs tried per entry point are
printed as one summary line at the end of the module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ros_harness import NodeProcess, call_service, spin_until

from adaspring_ros import msg_convert
from adaspring_ros.core.config import DEFAULT_SPACE, CompressionConfig, ConfigError

pytestmark = pytest.mark.ros

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


def fuzz(examples: int):
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None,
                    derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def tried(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _summary(pytestconfig):
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


class Perception:
    """A real perception_node on private names (``prefix``/...), and this process's ends of its
    image topic, results, metrics and Reconfigure service."""

    def __init__(self, node, log_dir: Path, backbone: Path, prefix: str, name: str,
                 extra: list[str] = (), address_space_bytes: int = 0) -> None:
        from adaspring_ros.msg import InferenceResult, PerformanceMetrics
        from adaspring_ros.srv import Reconfigure
        from sensor_msgs.msg import Image

        from adaspring_ros.nodes.qos import METRICS_QOS, RESULT_QOS, SENSOR_QOS

        self.node, self.log_dir, self.backbone = node, log_dir, backbone
        self.prefix, self.name, self.extra = prefix, name, list(extra)
        self.address_space_bytes = address_space_bytes
        self.results: list = []
        self.metrics: list = []
        self.restarts = 0
        self.proc = self._start()
        node.create_subscription(InferenceResult, f"{prefix}/result", self.results.append,
                                 RESULT_QOS)
        node.create_subscription(PerformanceMetrics, f"{prefix}/metrics", self.metrics.append,
                                 METRICS_QOS)
        self.publisher = node.create_publisher(Image, f"{prefix}/image", SENSOR_QOS)
        self.client = node.create_client(Reconfigure, f"{prefix}/reconfigure")
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

    def wait(self, predicate, what: str, timeout: float = 20.0, procs=()) -> None:
        spin_until(self.node, predicate, timeout, what, [self.proc, *procs])

    def ready(self) -> None:
        self.wait(self.client.service_is_ready, "the Reconfigure service", 60)
        self.wait(lambda: self.publisher.get_subscription_count() > 0, "the image subscription")
        self.fresh_metrics()

    def fresh_metrics(self):
        start = len(self.metrics)
        self.wait(lambda: len(self.metrics) > start, "a PerformanceMetrics message")
        return self.metrics[-1]

    def reconfigure(self, config_msg):
        from adaspring_ros.srv import Reconfigure

        return call_service(self.node, self.client, Reconfigure.Request(config=config_msg),
                            "the Reconfigure reply", [self.proc])

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


@pytest.fixture(scope="module")
def started(ros, reference, tmp_path_factory):
    """Every node process of this module, started together so their start-ups overlap."""
    log_dir = tmp_path_factory.mktemp("nodes")
    nodes = {
        "perception": Perception(ros, log_dir, reference.path, "/fuzz", "fuzz_perception",
                                 address_space_bytes=ADDRESS_SPACE),
        "evolution": EvolutionUnderTest(ros, log_dir),
        "context": ContextUnderTest(ros, log_dir),
    }
    yield nodes
    procs = [nodes["perception"].proc, *nodes["evolution"].procs, nodes["context"].proc]
    codes = {p.name: p.stop() for p in procs}
    for p in procs:
        log = p.log_path.read_text()
        assert codes[p.name] == 0 and "Traceback" not in log, f"{p.name}:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def perception(started):
    started["perception"].ready()
    return started["perception"]


def config_msg(config: CompressionConfig):
    from adaspring_ros.msg import CompressionConfig as ConfigMsg

    return msg_convert.config_to_msg(config, ConfigMsg)


# -- images at the perception node ------------------------------------------------------------
ODD_ENCODINGS = st.one_of(
    st.sampled_from(["RGB8", " rgb8 ", "16UC1", "yuv422", "", "bayer_rggb8", "mono16", "32FC1",
                     "rgb8;x", "ｍｏｎｏ８"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
            max_size=12),
)
ABSURD_SIDES = st.sampled_from([0, 2**31 - 1, 2**32 - 1, 65536, 20000])
U32 = 2**32 - 1
FAULTS = ("encoding", "height", "width", "step", "size", "claim")


@st.composite
def images(draw):
    """A plausible small frame with none, one or two fields broken (so both outcomes are
    common): odd encodings, zero or absurd sides, short/odd steps, data too short or too long,
    sizes claimed far beyond what travels; any is_bigendian (8-bit encodings ignore it)."""
    from sensor_msgs.msg import Image

    faults = draw(st.lists(st.sampled_from(FAULTS), max_size=2))
    encoding = draw(ODD_ENCODINGS if "encoding" in faults else
                    st.sampled_from(sorted(msg_convert.ENCODINGS)))
    height = draw(ABSURD_SIDES if "height" in faults else st.integers(1, 48))
    width = draw(ABSURD_SIDES if "width" in faults else st.integers(1, 48))
    channels = msg_convert.ENCODINGS.get(encoding.strip().lower(), 3)
    step = width * channels + draw(st.integers(0, 8))
    if "step" in faults:
        step = draw(st.one_of(st.integers(0, 200), st.just(U32)))
    step = min(step, U32)
    size = step * height
    if "size" in faults:
        size += draw(st.integers(-64, 64))
    if "claim" in faults:  # a header promising a huge frame over a small payload
        height, step = 20000, max(step, 60000)
    size = max(0, min(size, 1 << 16))  # what travels stays small
    msg = Image(height=height, width=width, step=step, encoding=encoding,
                is_bigendian=draw(st.sampled_from([0, 1, 255])))
    seed = draw(st.integers(0, 2**16))
    msg.data = np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes()
    return msg


U32_FIELDS = st.one_of(st.integers(0, 64), st.integers(0, U32),
                      st.sampled_from([1, 2**16, 2**24, 2**31 - 1, 2**31, U32 - 1, U32]))


@st.composite
def header_bombs(draw):
    """Header fields drawn over their whole range, independently of the few bytes that travel:
    huge step, width or height over small data (how issue 18's step bomb got through)."""
    from sensor_msgs.msg import Image

    msg = Image(height=draw(U32_FIELDS), width=draw(U32_FIELDS), step=draw(U32_FIELDS),
                encoding=draw(st.sampled_from(sorted(msg_convert.ENCODINGS))))
    size = draw(st.one_of(st.integers(0, 4096), st.sampled_from([1920, 640, 3])))
    msg.data = bytes(draw(st.integers(0, 255)) for _ in range(min(size, 8))) * (size // 8) \
        + bytes(size % 8)
    return msg


STAMP_TOLERANCE_S = 10.0  # the nodes' default stamp_tolerance_s


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


class StampLike:
    def __init__(self, sec: int, nanosec: int) -> None:
        self.sec, self.nanosec = sec, nanosec


def decodes(msg):
    """What the node should make of ``msg``: decoded pixels, or None when it must reject it."""
    from adaspring_ros.core import data

    try:
        pixels = msg_convert.image_to_numpy(msg)
        data.preprocess(pixels, 16)
    except (msg_convert.ImageError, data.DataError):
        return None
    return pixels


def test_fuzzed_images_are_counted_and_good_ones_classified_exactly(perception, reference):
    from sensor_msgs.msg import Image

    active = perception.metrics[-1].config_id
    start = perception.metrics[-1]
    first_metrics = len(perception.metrics)
    diagnostics = Diagnostics(perception.node, f"{perception.prefix}/diagnostics")
    perception.wait(lambda: diagnostics.values("perception_node"), "perception diagnostics")
    stamps_before = int(diagnostics.values("perception_node")["stamps_rejected"])
    sent = {"good": 0, "bad": 0, "bad_stamps": 0}

    def check(msg, tag: str, bad_stamp: bool = False) -> None:
        tried("Image -> perception_node")
        msg.header.frame_id = tag
        before = perception.metrics[-1]
        pixels = decodes(msg)
        after = perception.send_image(msg)
        copies = after.frames_received - before.frames_received  # > 1 if a resend was not needed
        sent["good" if pixels is not None else "bad"] += copies
        sent["bad_stamps"] += copies * (pixels is not None and bad_stamp)
        assert after.frames_rejected - before.frames_rejected == copies * (pixels is None), (
            f"{msg.encoding!r} {msg.width}x{msg.height} step {msg.step} {len(msg.data)} B")
        if pixels is not None:
            r = perception.result_for(tag)
            cls, score = reference.classify(active, pixels)
            assert (r.config_id, r.class_id) == (active, cls) and abs(r.score - score) < 1e-4

    # Hand-picked first: a real camera frame, a large one, and claims of absurd sizes.
    # Frames above ~0.5 MB often do not cross this machine's loopback best-effort from this
    # process at all (see the README's Reliability section); the frame path is the same for
    # every size, so the real-looking ones here stay below that.
    real = msg_convert.numpy_to_image(np.full((240, 320, 3), 90, np.uint8), "rgb8", Image)
    large = msg_convert.numpy_to_image(np.full((400, 500), 200, np.uint8), "mono8", Image)
    huge = Image(height=20000, width=20000, step=60000, encoding="rgb8", data=bytes(16))
    widest = Image(height=1, width=U32, step=U32, encoding="mono8", data=bytes(64))
    tallest = Image(height=U32, width=1, step=1, encoding="mono8", data=bytes(64))
    empty = Image(height=0, width=0, step=0, encoding="rgb8")
    # A small frame first: publications lost before a publisher's first received frame cannot
    # be counted by the node (it has no earlier sequence number to see the gap from).
    for i, msg in enumerate((empty, real, large, huge, widest, tallest)):
        check(msg, f"picked/{i}")
    # Good frames with stamps that cannot be right: negative, the largest, 1970, bad nanosec.
    now_s = perception.node.get_clock().now().nanoseconds // 10**9
    for i, (sec, nanosec) in enumerate(((-5, 0), (2**31 - 1, 0), (1, 0), (now_s, 2 * 10**9))):
        msg = msg_convert.numpy_to_image(np.full((24, 32), 30 * i, np.uint8), "mono8", Image)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        check(msg, f"picked/stamp/{i}", bad_stamp=True)

    @fuzz(80)
    @given(msg=st.one_of(images(), header_bombs()), data=st.data())
    def fuzz_images(msg, data):
        now_ns = perception.node.get_clock().now().nanoseconds
        sec, nanosec, bad = data.draw(stamps(now_ns))
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        check(msg, f"fuzz/{perception.published}", bad)

    fuzz_images()
    end = perception.metrics[-1]
    assert end.frames_rejected - start.frames_rejected == sent["bad"] > 20
    assert end.frames_processed - start.frames_processed == sent["good"] > 10
    # Stamps that cannot be right were counted, and none reached the latency statistics.
    perception.wait(lambda: int(diagnostics.values("perception_node")["stamps_rejected"])
                    - stamps_before == sent["bad_stamps"],
                    f"stamps_rejected + {sent['bad_stamps']}")
    assert sent["bad_stamps"] > 3, sent
    # (Negative: a frame stamped up to a second ahead, within the tolerance for clock skew.)
    e2e = [m.end_to_end_latency_ms_p95 for m in perception.metrics[first_metrics:]]
    outside = [v for v in e2e if not (math.isnan(v) or abs(v) <= STAMP_TOLERANCE_S * 1e3)]
    assert not outside, outside
    values = diagnostics.values("perception_node")
    assert values["frame_errors"] == values["callback_errors"] == "0", values
    perception.check_probe(reference, active, "probe/after-images")
    # Every publication is received or counted dropped, except resent copies of the last frame
    # that a later publication has not yet shown missing, and copies of the first frame lost
    # before the node's reader had matched this publisher (no earlier sequence number to see
    # the gap from).
    end = perception.metrics[-1]
    unseen = perception.published - (end.frames_received + end.frames_dropped)
    uncountable = perception.last_copies - 1 + perception.first_copies - 1
    assert 0 <= unseen <= uncountable, (unseen, perception.first_copies, perception.last_copies)


# -- Reconfigure requests at the perception node ----------------------------------------------
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
ARRAYS = ("width_ratio", "depth_blocks", "operator_variant", "rank_ratio", "int8_weights")
REQUEST_FAULTS = ("width", "depth", "operator", "rank", "resolution", "length", "id", "id_only",
                  "empty")


@st.composite
def reconfigure_requests(draw):
    """A random valid variant with none, one or two faults: values off the catalogue, NaN/inf,
    per-stage arrays of the wrong or different lengths, a config_id that does not match or does
    not parse, nothing at all."""
    from adaspring_ros.msg import CompressionConfig as ConfigMsg

    space = DEFAULT_SPACE
    faults = draw(st.lists(st.sampled_from(REQUEST_FAULTS), max_size=2))
    m = ConfigMsg()
    n = space.num_stages
    m.input_resolution_px = draw(st.sampled_from(space.resolutions))
    m.width_ratio = [draw(st.sampled_from(space.widths)) for _ in range(n)]
    m.depth_blocks = [draw(st.sampled_from(space.depths)) for _ in range(n)]
    m.operator_variant = [draw(st.sampled_from(space.operators)) for _ in range(n)]
    m.rank_ratio = [draw(st.sampled_from(space.ranks)) for _ in range(n)]
    m.int8_weights = [draw(st.booleans()) for _ in range(n)]
    stage = draw(st.integers(0, n - 1))
    if "width" in faults:
        m.width_ratio[stage] = draw(FLOATS)
    if "depth" in faults:
        m.depth_blocks[stage] = draw(st.integers(0, 255))
    if "operator" in faults:
        m.operator_variant[stage] = draw(st.sampled_from(["", "CONV", "winograd", "x" * 300,
                                                          "conv ", "ｃｏｎｖ"]))
    if "rank" in faults:
        m.rank_ratio[stage] = draw(FLOATS)
    if "resolution" in faults:
        m.input_resolution_px = draw(st.integers(0, 65535))
    if "length" in faults:  # one array, or all of them, of another length
        names = draw(st.sampled_from([ARRAYS, (draw(st.sampled_from(ARRAYS)),)]))
        size = draw(st.integers(0, 6))
        for name in names:
            values = list(getattr(m, name))
            setattr(m, name, (values * 3)[:size])
    if draw(st.booleans()):  # name the variant too: correctly, or not
        try:
            m.config_id = msg_convert.config_from_msg(m).id
        except ConfigError:
            m.config_id = "r99"
    if "id" in faults:
        m.config_id = draw(st.one_of(st.just(CompressionConfig.full().id), st.text(max_size=40),
                                     ODD_DIGIT_IDS))
    if "id_only" in faults or "empty" in faults:
        for name in ARRAYS:
            setattr(m, name, [])
        m.config_id = "" if "empty" in faults else draw(st.one_of(
            st.just(CompressionConfig.smallest().id), st.just("r28-w100d3ck100f"),
            st.text(max_size=60), ODD_DIGIT_IDS))
    # Fields the perception node does not read, with every kind of float in them.
    for name in ("predicted_accuracy_percent", "predicted_latency_ms", "predicted_energy_mj"):
        setattr(m, name, draw(ODD_FLOATS))
    for name in CONTEXT_FIELDS:
        setattr(m.context, name, draw(ODD_FLOATS))
    return m


def test_fuzzed_reconfigure_requests_are_counted_and_good_ones_served(perception, reference):
    start = perception.fresh_metrics()
    active = start.config_id
    counts = {"rejected": 0, "swaps": 0}

    @fuzz(60)
    @given(request=reconfigure_requests())
    def fuzz_requests(request):
        nonlocal active
        tried("Reconfigure -> perception_node")
        try:
            wanted = msg_convert.config_from_msg(request, DEFAULT_SPACE).id
        except ConfigError:
            wanted = None
        reply = perception.reconfigure(request)
        if wanted is None:
            counts["rejected"] += 1
            assert not reply.success and reply.message, reply
            # Refused by validation with the reason, never as a failed build (issue 18, 5).
            assert reply.message.startswith("invalid request"), reply.message
            assert not reply.swapped
            assert reply.active.config_id == active
            assert math.isnan(reply.swap_ms)
            return
        assert reply.success, reply.message
        assert reply.active.config_id == wanted and reply.swap_ms >= 0
        counts["swaps"] += wanted != active
        active = wanted

    fuzz_requests()
    perception.wait(lambda: perception.metrics[-1].reconfigure_rejected
                    == start.reconfigure_rejected + counts["rejected"], "the rejections counted")
    end = perception.metrics[-1]
    assert counts["rejected"] > 20 and counts["swaps"] > 3, counts
    assert end.swaps - start.swaps == counts["swaps"] and end.config_id == active
    assert perception.proc.alive()
    perception.check_probe(reference, active, "probe/after-requests")
    # A valid request still swaps, and the new variant computes the next frame.
    other = next(c for c in (CompressionConfig.smallest(), CompressionConfig.full())
                 if c.id != active)
    reply = perception.reconfigure(config_msg(other))
    assert reply.success and reply.active.config_id == other.id, reply.message
    perception.check_probe(reference, other.id, "probe/after-valid-request")


# -- ContextState at the evolution node, BatteryState at the context node ---------------------
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


@pytest.fixture(scope="module")
def evolution(started):
    from test_ros_evolution import context_msg

    e = started["evolution"]
    e.wait(lambda: e.context.get_subscription_count() > 0, "the context subscription", 60)
    # A good context at 5 Hz, as a context node would send it, for the rest of the module.
    e.good = context_msg(100.0)
    e.timer = e.node.create_timer(0.2, lambda: e.context.publish(e.good))
    # What the policy picks for a 100 ms budget with the default λ (the middle row), at once.
    e.wait(lambda: e.configs and e.configs[-1].config_id == e.settled,
           "the policy's choice for a 100 ms budget", 30)
    return e


CONTEXT_FIELDS = ("battery_percent", "battery_seconds_left", "cpu_load_percent",
                  "cpu_load_other_percent", "memory_available_mb", "cpu_frequency_mhz",
                  "cpu_temperature_c", "latency_budget_ms")
GARBAGE = {
    "battery_percent": [-1.0, 100.5],
    "battery_seconds_left": [-1.0],
    "cpu_load_percent": [NAN, -5.0, 101.0],
    "cpu_load_other_percent": [NAN, -0.1, 250.0],
    "memory_available_mb": [-1.0],
    "cpu_frequency_mhz": [-1.0],
    "cpu_temperature_c": [-300.0, 1e6],
    "latency_budget_ms": [NAN, 0.0, -1.0],
}
for _values in GARBAGE.values():  # never a reading, in any field (issue 18: +inf got through)
    _values += [math.inf, -math.inf, 1e30, -1e30, 3.4e38]
REQUIRED = ("cpu_load_percent", "cpu_load_other_percent", "latency_budget_ms")


def must_reject(msg) -> bool:
    """Cases any decoder must refuse, decided without it: an infinite or absurdly large value
    in any field, NaN where the message has no "unknown"."""
    values = {name: getattr(msg, name) for name in CONTEXT_FIELDS}
    return any(math.isinf(v) or abs(v) > 1e20 for v in values.values()) \
        or any(math.isnan(values[name]) for name in REQUIRED)


@st.composite
def garbage_contexts(draw):
    from adaspring_ros.msg import ContextState

    msg = ContextState(latency_budget_ms=100.0, source=draw(st.text(max_size=20)))
    for name in CONTEXT_FIELDS:  # plausible, random or absurd, field by field
        setattr(msg, name, draw(st.one_of(st.just(getattr(msg, name)), st.floats(width=32),
                                          st.sampled_from(GARBAGE[name]), ODD_FLOATS)))
    for name in draw(st.lists(st.sampled_from(CONTEXT_FIELDS), min_size=1, max_size=3)):
        setattr(msg, name, draw(st.sampled_from(GARBAGE[name])))
    msg.charging = draw(st.booleans())
    msg.header.stamp.sec = draw(st.integers(-2**31, 2**31 - 1))
    msg.header.stamp.nanosec = draw(st.integers(0, 2**32 - 1))
    return msg


def spin_for(node, seconds: float, until=lambda: False) -> None:
    import rclpy

    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        rclpy.spin_once(node, timeout_sec=0.01)


def test_garbage_context_is_counted_and_never_swaps(evolution):
    from test_ros_evolution import context_msg

    e = evolution
    e.wait(lambda: e.counts().get("applied") == e.settled, "diagnostics naming the variant")
    before = e.counts()
    n_configs = len(e.configs)
    rejected = int(before["context_rejected"])

    @fuzz(30)
    @given(msg=garbage_contexts())
    def fuzz_contexts(msg):
        nonlocal rejected
        try:
            msg_convert.context_from_msg(msg)
            assert not must_reject(msg), f"accepted {msg}"
            assume(False)  # a valid context, however odd, is not garbage: it may swap
        except msg_convert.ContextError:
            pass
        tried("ContextState -> evolution_node")
        # Keep-last-1: a good context sent meanwhile may replace the garbage before the node
        # takes it, so it is sent again until counted (a late first copy counts twice).
        copies = 0
        deadline = time.monotonic() + 20
        while int(e.counts().get("context_rejected", -1)) < rejected + 1:
            assert time.monotonic() < deadline, "garbage context never counted"
            e.context.publish(msg)
            copies += 1
            spin_for(e.node, 0.5, lambda: int(e.counts()["context_rejected"]) > rejected)
        now = int(e.counts()["context_rejected"])
        assert rejected < now <= rejected + copies
        rejected = now

    fuzz_contexts()
    after = e.counts()
    assert len(e.configs) == n_configs, [c.reason for c in e.configs[n_configs:]]
    assert after["swaps"] == before["swaps"] and after["applied"] == before["applied"]
    assert "rejected context" in e.proc.output()
    # Still serving: a real change of context is acted on.
    e.good = context_msg(1.0)
    e.wait(lambda: len(e.configs) > n_configs, "a swap for a 1 ms budget", 30)
    assert e.configs[-1].config_id != before["applied"] and "violates" in e.configs[-1].reason


def fake_swaps(e) -> int:
    """Swaps the stand-in perception node performed, from its log."""
    lines = [line for line in e.fake.output().splitlines() if "swaps=" in line]
    return int(lines[-1].rsplit("swaps=", 1)[1]) if lines else 0


def test_garbage_metrics_never_stop_the_evolution_node(evolution):
    """PerformanceMetrics from an impostor: every float field +-inf/NaN/negative/huge, stamps
    from negative to far future, variants outside the table, and metrics impersonating the
    serving node. Those that cannot come from the serving node are counted and ignored; the
    others may move the policy, as real metrics would, but never stop it, and the evolution
    node's swap counter stays equal to the stand-in perception node's."""
    from adaspring_ros.msg import PerformanceMetrics
    from test_ros_evolution import context_msg

    from adaspring_ros.nodes.qos import METRICS_QOS

    e = evolution
    impostor = e.node.create_publisher(PerformanceMetrics, "/fuzz_evo/metrics", METRICS_QOS)
    e.wait(lambda: impostor.get_subscription_count() > 0, "the metrics subscription")
    outside = "r20-w50d2ck50f-w50d2ck50f-w50d2ck50f"  # a variant, but not in the table
    assert outside not in e.table_ids
    names = st.one_of(st.sampled_from(e.table_ids), st.sampled_from(e.table_ids),
                      st.just(outside), st.text(max_size=30), ODD_DIGIT_IDS)
    floats = {name: ODD_FLOATS for name in msg_convert._METRIC_FLOATS}
    ignored = {"expected": 0}

    def ignored_now() -> int:
        counts = e.counts()
        return int(counts.get("metrics_rejected", 0)) + int(counts.get("metrics_stale", 0))

    @fuzz(30)
    @given(config_id=names, values=st.fixed_dictionaries(floats), data=st.data(),
           count=st.integers(0, 2**64 - 1), swaps=st.integers(0, 2**32 - 1))
    def fuzz_metrics(config_id, values, data, count, swaps):
        tried("PerformanceMetrics -> evolution_node")
        now_ns = e.node.get_clock().now().nanoseconds
        sec, nanosec, bad_stamp = data.draw(stamps(now_ns))
        msg = PerformanceMetrics(config_id=config_id, frames_received=count,
                                 frames_dropped=count, swaps=swaps, **values)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        before = ignored_now()
        n = len(e.diagnostics.arrays)
        impostor.publish(msg)
        if bad_stamp or (sec, nanosec) == (0, 0) or config_id not in e.table_ids:
            # Cannot be from the serving node: counted (and so ignored).
            e.wait(lambda: ignored_now() > before, f"metrics for {config_id!r} at "
                   f"{sec}.{nanosec:09d} counted as ignored")
            ignored["expected"] += 1
        else:
            e.wait(lambda: len(e.diagnostics.arrays) > n, "diagnostics after the metrics")

    fuzz_metrics()
    e.node.destroy_publisher(impostor)
    assert ignored["expected"] > 5, ignored
    e.good = context_msg(100.0)
    # Still running and consistent: what it last applied is what the stand-in serves and what
    # /adaspring/config says. (Which variant that is depends on the impostor's numbers: metrics
    # claiming a budget violation make the policy back off from that variant, as it should.)

    def consistent() -> bool:
        serving = [line for line in e.fake.output().splitlines() if line.startswith("serving")]
        applied = e.counts().get("applied")
        return bool(serving) and serving[-1] == f"serving {applied}" \
            and e.configs[-1].config_id == applied and e.call_idle() \
            and int(e.counts()["swaps"]) == fake_swaps(e)

    e.wait(consistent, "the evolution node, the stand-in and /adaspring/config to agree, and "
           "the two swap counters", 30)
    n = len(e.diagnostics.arrays)
    e.wait(lambda: len(e.diagnostics.arrays) > n + 5, "diagnostics still flowing")
    assert e.counts()["callback_errors"] == "0"


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


@pytest.fixture(scope="module")
def context_node(ros, started):
    c = started["context"]
    spin_until(ros, lambda: c.received and c.battery.get_subscription_count() > 0, 60,
               "the context node", [c.proc])
    return c.proc, c.received, c.battery, c.diagnostics


BATTERY_FLOATS = st.one_of(st.just(NAN), st.floats(width=32),
                           st.sampled_from([0.0, 0.5, 1.0, -0.1, 1.5, 100.0, 2.0, -1.0]))


def test_garbage_battery_is_counted_and_the_last_good_reading_kept(ros, context_node):
    from sensor_msgs.msg import BatteryState

    proc, received, battery, diagnostics = context_node
    rejected, last_good = 0, NAN

    def settle() -> None:  # two context samples later the reading has been handled
        n = len(received)
        spin_until(ros, lambda: len(received) >= n + 2, 10, "context samples", [proc])

    @fuzz(40)
    @given(percentage=BATTERY_FLOATS, status=st.one_of(st.integers(0, 4), st.integers(0, 255)),
           present=st.sampled_from([True, True, True, False]), charge=BATTERY_FLOATS,
           capacity=BATTERY_FLOATS, current=BATTERY_FLOATS, voltage=BATTERY_FLOATS)
    def fuzz_battery(percentage, status, present, charge, capacity, current, voltage):
        nonlocal rejected, last_good
        tried("BatteryState -> context_node")
        msg = BatteryState(percentage=percentage, power_supply_status=status, present=present,
                           charge=charge, capacity=capacity, current=current, voltage=voltage)
        try:
            reading = msg_convert.battery_from_msg(msg)
        except msg_convert.ContextError:
            reading = None
        battery.publish(msg)
        if reading is None:
            rejected += 1
            settle()
        else:
            last_good = NAN if reading.percent is None else reading.percent
            spin_until(ros, lambda: same(received[-1].battery_percent, last_good), 10,
                       f"battery_percent {last_good}", [proc])
        assert same(received[-1].battery_percent, last_good)

    fuzz_battery()
    spin_until(ros, lambda: diagnostics.values("context_node").get("battery_rejected")
               == str(rejected), 10, f"battery_rejected = {rejected}", [proc])
    assert rejected > 10


def same(a: float, b: float) -> bool:
    """Equal as float32 (the message type), NaN equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


# -- SetParameters at every node --------------------------------------------------------------
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


def test_fuzzed_parameters_at_the_perception_node(ros, perception, reference):
    from adaspring_ros.nodes.perception_node import PARAMETERS

    fuzz_parameters(ros, "fuzz_perception", PARAMETERS, [perception.proc], "perception_node", 30)
    perception.check_probe(reference, None, "probe/after-parameters")


def test_fuzzed_parameters_at_the_context_node(ros, context_node):
    from adaspring_ros.nodes.context_node import PARAMETERS

    proc, received, _battery, _diagnostics = context_node
    fuzz_parameters(ros, "fuzz_context", PARAMETERS, [proc], "context_node", 25)
    n = len(received)
    spin_until(ros, lambda: len(received) > n + 5, 10, "contexts after the fuzzing", [proc])


def test_fuzzed_parameters_at_the_evolution_node(ros, evolution):
    from adaspring_ros.nodes.evolution_node import PARAMETERS

    e = evolution
    fuzz_parameters(ros, "fuzz_evolution", [p[:3] for p in PARAMETERS], e.procs, "evolution_node",
                    30)
    n = len(e.diagnostics.arrays)
    e.wait(lambda: len(e.diagnostics.arrays) > n + 3, "diagnostics after the fuzzing")


# -- files at their loaders -------------------------------------------------------------------
SCENARIO = (Path(__file__).resolve().parent.parent / "config" / "scenarios" / "mixed.yaml")
YAML_VALUES = st.sampled_from([".nan", ".inf", "-.inf", "-1", "1e400", "null", "'x'", "[1, 2]",
                               "{a: 1}", "true", "101", "0", "-0.0", "1e-9", "]", "&a *a"])


def test_fuzzed_scenario_files_fail_naming_the_problem(tmp_path):
    from adaspring_ros.core.context import ScenarioError, ScenarioTrace

    text = SCENARIO.read_text()
    path = tmp_path / "fuzzed.yaml"

    @fuzz(50)
    @given(kind=st.sampled_from(["truncate", "value", "line"]), data=st.data())
    def fuzz_scenario(kind, data):
        tried("ScenarioTrace.load")
        if kind == "truncate":
            mutated = text[:data.draw(st.integers(0, len(text)))]
        elif kind == "value":  # a random value after one of the "key: value" colons
            colons = [i for i, c in enumerate(text) if c == ":"]
            i = data.draw(st.sampled_from(colons))
            end = min(j for j in (text.find(",", i), text.find("}", i), text.find("\n", i))
                      if j > 0)
            mutated = text[:i + 1] + " " + data.draw(YAML_VALUES) + text[end:]
        else:
            lines = text.splitlines()
            at = data.draw(st.integers(0, len(lines)))
            junk = data.draw(st.one_of(st.text(max_size=30), YAML_VALUES))
            mutated = "\n".join(lines[:at] + [junk] + lines[at:])
        path.write_text(mutated)
        try:
            trace = ScenarioTrace.load(path)
        except ScenarioError as exc:
            assert str(path) in str(exc), exc
            return
        assert trace.steps and trace.steps[0].t == 0.0
        assert all(a.t < b.t for a, b in zip(trace.steps, trace.steps[1:], strict=False))

    fuzz_scenario()


def damaged(good: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """``good`` truncated to ``cut`` bytes, with bytes XORed by the (offset, mask) ``flips``."""
    raw = bytearray(good[:cut])
    for at, mask in flips:
        if at < len(raw):
            raw[at] ^= mask
    return bytes(raw)


def test_fuzzed_profile_table_files_fail_naming_the_problem(tmp_path):
    from adaspring_ros.core.profile_table import ProfileError, ProfileTable
    from adaspring_ros.core.synthetic import synthetic_table

    path = tmp_path / "table.json"
    synthetic_table(20, seed=3).save(path)
    good = path.read_bytes()
    digest = hashlib.sha256(good).hexdigest()

    @fuzz(50)
    @given(cut=st.integers(0, len(good)), flips=st.lists(
        st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), max_size=3))
    def fuzz_table(cut, flips):
        tried("ProfileTable.load")
        raw = damaged(good, cut, flips)
        path.write_bytes(raw)
        if raw != good:
            with pytest.raises(ProfileError, match="checksum mismatch"):
                ProfileTable.load(path, expected_sha256=digest)
        try:
            table = ProfileTable.load(path)
        except ProfileError as exc:
            assert str(exc)
            return
        assert len(table) >= 1

    fuzz_table()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from adaspring_ros.core.supernet import build_backbone, save_backbone

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_backbone(build_backbone(stage_channels=(4, 8, 8)), path)
    return path


def test_fuzzed_weight_files_fail_naming_the_problem(tmp_path, tiny_checkpoint):
    from adaspring_ros.core.supernet import CheckpointError, load_backbone, write_checksum

    good = tiny_checkpoint.read_bytes()
    path = tmp_path / "fuzzed.pt"
    sums = tmp_path / "fuzzed.pt.sha256"

    @fuzz(40)
    @given(cut=st.integers(0, len(good)), flips=st.lists(
        st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), max_size=4),
        checksum=st.sampled_from(["stale", "fresh", "garbage", "empty"]))
    def fuzz_weights(cut, flips, checksum):
        tried("load_backbone")
        raw = damaged(good, cut, flips)
        path.write_bytes(raw)
        if checksum == "fresh":  # the damage is in the checksum too: only parsing can tell
            write_checksum(path)
        else:
            sums.write_text({"stale": hashlib.sha256(good).hexdigest() + "  fuzzed.pt\n",
                             "garbage": "not-a-digest\n", "empty": ""}[checksum])
        try:
            model = load_backbone(path)
        except CheckpointError as exc:
            assert "fuzzed.pt" in str(exc), exc
            if checksum != "fresh" and raw != good:
                assert "does not match" in str(exc)
            return
        assert raw == good or checksum == "fresh"
        assert len(model.classes) == 10

    fuzz_weights()


def test_weight_files_with_wrong_shapes_name_the_tensor(tmp_path, tiny_checkpoint):
    import torch

    from adaspring_ros.core.supernet import CheckpointError, load_backbone, write_checksum

    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    names = sorted(k for k, v in ckpt["state_dict"].items() if v.dim() > 0)
    path = tmp_path / "shapes.pt"

    @fuzz(20)
    @given(name=st.sampled_from(names), grow=st.integers(1, 3), drop=st.booleans())
    def fuzz_shapes(name, grow, drop):
        tried("load_backbone (shapes)")
        state = dict(ckpt["state_dict"])
        if drop:
            del state[name]
        else:
            tensor = state[name]
            state[name] = torch.zeros((tensor.shape[0] + grow, *tensor.shape[1:]))
        torch.save({**ckpt, "state_dict": state}, path)
        write_checksum(path)
        with pytest.raises(CheckpointError, match="missing tensors" if drop else "has shape"):
            load_backbone(path)

    fuzz_shapes()
