"""Fuzzing (hypothesis) at a real perception_node, as a robot's drivers and operators reach it.

test_fuzz_inputs.py fuzzes the pure decoders in this process; here sensor_msgs/Image is published
at a real perception_node running under a 3 GiB address-space cap (RLIMIT_AS, as on a small
robot), and Reconfigure requests and SetParameters are sent to it: it stays up, every bad input
moves exactly one PerformanceMetrics counter (frames_rejected, reconfigure_rejected), every good
one gives a result equal to materialise(config) offline, and afterwards a probe frame and a valid
Reconfigure still work. Header fields (height, width, step) are also drawn over their whole range
independently of the data that travels, stamps from negative to far future (a stamp that cannot
be right is counted in stamps_rejected and never reaches the latency). Shared pieces:
fuzz_harness.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fuzz_harness import (  # noqa: F401  (fixtures: _summary, ros, reference)
    ADDRESS_SPACE,
    CONTEXT_FIELDS,
    FLOATS,
    ODD_DIGIT_IDS,
    ODD_FLOATS,
    STAMP_TOLERANCE_S,
    U32,
    Diagnostics,
    Perception,
    _summary,
    config_msg,
    fuzz,
    fuzz_parameters,
    reference,
    ros,
    same,
    stamps,
    tried,
)
from hypothesis import given
from hypothesis import strategies as st

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig, ConfigError

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def started(ros, reference, tmp_path_factory):
    """The perception node under test, under the address-space cap of a small robot."""
    log_dir = tmp_path_factory.mktemp("nodes")
    perception = Perception(ros, log_dir, reference.path, "/fuzz", "fuzz_perception",
                            address_space_bytes=ADDRESS_SPACE)
    yield perception
    code = perception.proc.stop()
    log = perception.proc.log_path.read_text()
    assert code == 0 and "Traceback" not in log, f"{perception.proc.name}:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def perception(started):
    started.ready()
    return started


ODD_ENCODINGS = st.one_of(
    st.sampled_from(["RGB8", " rgb8 ", "16UC1", "yuv422", "", "bayer_rggb8", "mono16", "32FC1",
                     "rgb8;x", "ｍｏｎｏ８", "nv12", "YUYV"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
            max_size=12),
)
ABSURD_SIDES = st.sampled_from([0, 2**31 - 1, 2**32 - 1, 65536, 20000])
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


def decodes(msg):
    """What the node should make of ``msg``: decoded pixels, or None when it must reject it."""
    from adaspring_ros.core.data import datasets as data
    from adaspring_ros.core.data.transforms import preprocess_frame

    try:
        pixels = msg_convert.image_to_numpy(msg, channels=1)  # as the node for a grey backbone
        preprocess_frame(pixels, 16)
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
            m.config_id = msg_convert.config_from_msg(m, DEFAULT_SPACE).id
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
    # A metrics window that closed before the last requests is not their verdict: wait for the
    # window that has seen them all (the rejections and the swaps alike).
    perception.wait(lambda: perception.metrics[-1].reconfigure_rejected
                    == start.reconfigure_rejected + counts["rejected"]
                    and perception.metrics[-1].config_id == active, "the requests counted")
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


def test_fuzzed_parameters_at_the_perception_node(ros, perception, reference):
    from adaspring_ros.nodes.perception_node import PARAMETERS

    fuzz_parameters(ros, "fuzz_perception", PARAMETERS, [perception.proc], "perception_node", 30)
    perception.check_probe(reference, None, "probe/after-parameters")
