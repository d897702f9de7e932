"""SwapTracker: the evolution node's Reconfigure retry and confirm bookkeeping, fake clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from adaspring_ros.core.policy.swap_tracker import SwapTracker

TIMEOUT = 3.0


@dataclass(frozen=True)
class FakeDecision:
    config_id: str
    previous_id: str | None = "full"


A, B = FakeDecision("A"), FakeDecision("B", previous_id="A")


@pytest.fixture
def tracker() -> SwapTracker:
    return SwapTracker(timeout_s=TIMEOUT, retries=2)


def test_one_call_in_flight_then_confirmed_by_its_reply(tracker):
    assert tracker.may_send(0.0)
    tracker.sent(A, 0.0, stamp_ns=100, handle="h1")
    assert not tracker.may_send(0.5)
    outcome, call = tracker.replied("h1", 0.5, success=True, active_id="A")
    assert outcome == "confirmed" and call.target == "A" and call.handle == "h1"
    assert tracker.call is None and tracker.may_send(0.5)
    assert tracker.applied is None  # applied only once confirm() says so


def test_confirm_counts_swaps_and_no_ops_apart(tracker):
    call = tracker.sent(A, 0.0, 100, handle="h")
    tracker.replied("h", 0.1, True, "A")
    assert tracker.confirm(call, 0.1, 200, swapped=False)
    assert tracker.applied_id == "A" and tracker.counts["already_serving"] == 1
    call = tracker.sent(B, 1.0, 300, handle="h2")
    tracker.replied("h2", 1.1, True, "B")
    assert tracker.confirm(call, 1.1, 400, swapped=True)
    assert tracker.applied_id == "B" and tracker.counts["swaps"] == 1
    assert tracker.applied[1] == 400


def test_refusal_backs_off_for_the_timeout(tracker):
    tracker.sent(A, 0.0, 100, handle="h")
    outcome, call = tracker.replied("h", 0.2, success=False, active_id="full")
    assert outcome == "refused" and call.target == "A"
    assert tracker.counts["refused"] == 1
    assert not tracker.may_send(0.2 + TIMEOUT - 0.01)
    assert tracker.may_send(0.2 + TIMEOUT)


def test_success_naming_another_variant_is_a_refusal(tracker):
    tracker.sent(A, 0.0, 100, handle="h")
    assert tracker.replied("h", 0.1, True, "B")[0] == "refused"


def test_no_reply_times_out_once_then_retries_after_twice_the_timeout(tracker):
    tracker.sent(A, 0.0, 100, handle="h")
    assert tracker.check(TIMEOUT) == []
    events = tracker.check(TIMEOUT + 0.1)
    assert [e for e, _ in events] == ["timed_out"] and tracker.counts["timeouts"] == 1
    assert tracker.check(TIMEOUT + 1.0) == []  # logged once
    assert tracker.call is not None  # still waiting for a late reply or metrics
    events = tracker.check(2 * TIMEOUT + 0.1)
    assert [e for e, _ in events] == ["retry"] and tracker.call is None
    assert events[0][1].attempt == 1


def test_a_long_stall_times_out_and_retries_in_one_check(tracker):
    tracker.sent(A, 0.0, 100, handle="h")
    assert [e for e, _ in tracker.check(10 * TIMEOUT)] == ["timed_out", "retry"]


def test_retries_run_out_then_the_call_is_abandoned_with_a_back_off(tracker):
    now = 0.0
    for attempt in (1, 2, 3):
        tracker.sent(A, now, 100, attempt=attempt, handle=f"h{attempt}")
        now += 2 * TIMEOUT + 0.1
        events = [e for e, _ in tracker.check(now)]
        assert events[-1] == ("retry" if attempt <= 2 else "abandoned")
    assert tracker.counts["abandoned"] == 1 and tracker.counts["timeouts"] == 3
    assert not tracker.may_send(now) and tracker.may_send(now + TIMEOUT)


def test_the_late_reply_of_an_abandoned_call_is_ignored(tracker):
    tracker.sent(A, 0.0, 100, handle="old")
    tracker.check(2 * TIMEOUT + 0.1)  # lost: retried with a new request
    tracker.sent(A, 2 * TIMEOUT + 0.1, 200, attempt=2, handle="new")
    assert tracker.replied("old", 7.0, True, "A") == ("ignored", None)
    assert tracker.call is not None and tracker.call.handle == "new"


def test_metrics_after_the_request_confirm_an_unanswered_call(tracker):
    tracker.sent(A, 0.0, stamp_ns=1_000, handle="h")
    assert tracker.metrics("A", 2_000, 1.0)[0] == "observe"  # not timed out yet: wait for reply
    tracker.check(TIMEOUT + 0.1)
    assert tracker.metrics("A", 999, TIMEOUT + 0.2) == ("stale", None)  # window before request
    assert tracker.counts["metrics_stale"] == 1
    verdict, call = tracker.metrics("A", 2_000, TIMEOUT + 0.3)
    assert verdict == "confirmed" and call.target == "A" and tracker.call is None


def test_metrics_naming_another_variant_mean_a_restart(tracker):
    call = tracker.sent(A, 0.0, 100, handle="h")
    tracker.replied("h", 0.1, True, "A")
    tracker.confirm(call, 0.1, 200, swapped=True)
    assert tracker.metrics("A", 300, 1.0) == ("observe", None)
    assert tracker.metrics("full", 300, 1.0) == ("reapply", None)
    assert tracker.should_reapply_on_return()


def test_metrics_naming_another_variant_while_a_call_is_in_flight_are_stale(tracker):
    call = tracker.sent(A, 0.0, 100, handle="h")
    tracker.replied("h", 0.1, True, "A")
    tracker.confirm(call, 0.1, 200, swapped=True)
    tracker.sent(B, 1.0, 300, handle="h2")
    assert tracker.metrics("A", 400, 1.1) == ("observe", None)  # the applied one, still serving
    assert tracker.metrics("full", 400, 1.1) == ("stale", None)
    assert not tracker.should_reapply_on_return()


def test_a_false_claim_is_rejected_and_mutes_further_claims(tracker):
    call = tracker.sent(A, 0.0, 100, handle="h")
    tracker.replied("h", 0.1, True, "A")
    tracker.confirm(call, 0.1, 200, swapped=True)
    # Metrics claim "full" serves: the applied variant is sent again, as a claim.
    claim = tracker.sent(A, 1.0, 300, previous="full", reapply=True, claim=True, handle="c")
    assert tracker.counts["reapplied"] == 1
    tracker.replied("c", 1.1, True, "A")
    assert not tracker.confirm(claim, 1.1, 400, swapped=False)  # it served A all along
    assert tracker.counts["metrics_rejected"] == 1 and tracker.counts["swaps"] == 1
    assert tracker.metrics("full", 500, 1.2) == ("rejected", None)
    assert tracker.counts["metrics_rejected"] == 2
    assert tracker.metrics("full", 500, 1.1 + TIMEOUT) == ("reapply", None)


def test_a_retried_claim_found_serving_is_applied_not_rejected(tracker):
    # A restarted perception node answers its first call late: the first attempt is abandoned,
    # gets through anyway, and the retry finds the variant serving. The claim was true.
    call = tracker.sent(A, 0.0, 100, handle="h")
    tracker.replied("h", 0.1, True, "A")
    tracker.confirm(call, 0.1, 200, swapped=True)
    tracker.sent(A, 1.0, 300, previous="full", reapply=True, claim=True, handle="c1")
    events = tracker.check(1.0 + 2 * TIMEOUT + 0.1)
    assert [event for event, _ in events] == ["timed_out", "retry"]
    retry = tracker.sent(A, 7.2, 400, previous="full", attempt=2, reapply=True, claim=True,
                         handle="c2")
    assert tracker.replied("c1", 7.3, True, "A") == ("ignored", None)
    assert tracker.replied("c2", 7.3, True, "A") == ("confirmed", retry)
    assert tracker.confirm(retry, 7.3, 500, swapped=False)  # announced, not rejected
    assert tracker.counts["metrics_rejected"] == 0
    assert tracker.metrics("full", 600, 7.4) == ("reapply", None)  # claims not muted


def test_a_retried_reapplication_counts_once(tracker):
    tracker.sent(A, 0.0, 100, reapply=True, handle="h1")
    tracker.check(2 * TIMEOUT + 0.1)
    tracker.sent(A, 2 * TIMEOUT + 0.1, 200, attempt=2, reapply=True, handle="h2")
    assert tracker.counts["reapplied"] == 1


def test_previous_defaults_to_the_decisions_previous_variant(tracker):
    assert tracker.sent(B, 0.0, 100).previous == "A"
    assert tracker.sent(B, 0.0, 100, previous="unknown").previous == "unknown"
