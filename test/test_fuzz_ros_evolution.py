"""Fuzzing (hypothesis) at a real evolution_node and a real context_node.

ContextState at the evolution node (counted as context_rejected, never a swap; every float field
also drawn as +-inf, NaN, negative and huge, and anything non-finite must be refused),
PerformanceMetrics at it (every float field likewise, stamps from negative to far future,
variants outside the table, metrics impersonating the serving node: those that cannot be from it
are counted, and its swap counter stays equal to the perception side's), BatteryState at a real
context_node (counted as battery_rejected, the last good reading kept), and SetParameters with
random names, types and values at both: each is rejected or applied (and reads back as such),
never a crash. Shared pieces: fuzz_harness.py.
"""

from __future__ import annotations

import math
import time

import pytest
from fuzz_harness import (  # noqa: F401  (fixtures: _summary, ros, reference)
    CONTEXT_FIELDS,
    NAN,
    ODD_DIGIT_IDS,
    ODD_FLOATS,
    ContextUnderTest,
    EvolutionUnderTest,
    _summary,
    fuzz,
    fuzz_parameters,
    ros,
    same,
    spin_for,
    stamps,
    tried,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from ros_harness import spin_until

from adaspring_ros import msg_convert

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def started(ros, tmp_path_factory):
    """The node processes of this module, started together so their start-ups overlap."""
    log_dir = tmp_path_factory.mktemp("nodes")
    nodes = {"evolution": EvolutionUnderTest(ros, log_dir),
             "context": ContextUnderTest(ros, log_dir)}
    yield nodes
    procs = [*nodes["evolution"].procs, nodes["context"].proc]
    codes = {p.name: p.stop() for p in procs}
    for p in procs:
        log = p.log_path.read_text()
        assert codes[p.name] == 0 and "Traceback" not in log, f"{p.name}:\n{log[-3000:]}"


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


def test_fuzzed_parameters_at_the_context_node(ros, context_node):
    from adaspring_ros.nodes.context_node import PARAMETERS

    proc, received, _battery, _diagnostics = context_node
    fuzz_parameters(ros, "fuzz_context", PARAMETERS, [proc], "context_node", 25)
    n = len(received)
    spin_until(ros, lambda: len(received) > n + 5, 10, "contexts after the fuzzing", [proc])


def test_fuzzed_parameters_at_the_evolution_node(ros, evolution):
    from adaspring_ros.nodes.evolution_node import PARAMETERS

    e = evolution
    fuzz_parameters(ros, "fuzz_evolution", PARAMETERS, e.procs, "evolution_node",
                    30)
    n = len(e.diagnostics.arrays)
    e.wait(lambda: len(e.diagnostics.arrays) > n + 3, "diagnostics after the fuzzing")
