"""The bookkeeping of Reconfigure calls: one request in flight, confirmed, retried or abandoned.

The evolution node asks the perception node to swap variants over a ROS service. A service call
can go unanswered (the server restarted, or the reply was lost), be answered late, or be
overtaken by PerformanceMetrics that already name the new variant. :class:`SwapTracker` decides
what each of those events means; the node only sends requests, logs and publishes. Plain logic
with injected time (``now``: seconds on any monotonic clock; ``stamp_ns``: ROS time of the
node's clock), so it is tested with a fake clock.

The rules:
  * a call with no reply after ``timeout_s`` is not re-sent blindly: the late reply, or metrics
    stamped after the request and naming the requested variant, still confirm it; only after
    twice the timeout is the request abandoned and retried (up to ``retries`` times), and a
    retry names the same variant, which the perception node already serves if the first call
    got through, so a slow swap is never done twice;
  * after a refusal or an abandoned call nothing is sent for ``timeout_s``;
  * metrics naming another variant than the applied one mean the perception node restarted:
    the applied variant is sent again (a *claim*); if the perception node replies that it
    served that variant all along, the metrics were not its own (forged, or from another
    graph): they are counted in ``metrics_rejected`` and such claims are ignored for
    ``timeout_s``; a retried claim cannot be disproved that way, since its first attempt may
    have made the swap;
  * ``swaps`` counts only calls after which the perception node served another variant (a call
    that found it serving already counts in ``already_serving``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SwapCall", "SwapTracker"]


@dataclass
class SwapCall:
    """The one Reconfigure request in flight."""

    decision: Any  # the evolution Decision being applied (has .config_id)
    sent_at: float  # monotonic time of sending
    sent_ns: int  # ROS time of sending: metrics confirming the call must be later
    previous: str | None = None  # what the perception node served before
    attempt: int = 1
    timed_out: bool = False
    reapply: bool = False  # applying the active variant again after a perception restart
    claim: bool = False  # the re-application was asked for by metrics naming another variant
    handle: Any = None  # the transport's handle of the request (an rclpy Future)

    @property
    def target(self) -> str:
        return self.decision.config_id


class SwapTracker:
    """Which Reconfigure call is in flight, what was applied last, and what happens next."""

    COUNTS = ("swaps", "already_serving", "reapplied", "refused", "timeouts", "abandoned",
              "metrics_rejected", "metrics_stale")

    def __init__(self, timeout_s: float = 3.0, retries: int = 2) -> None:
        self.timeout_s, self.retries = timeout_s, retries
        self.call: SwapCall | None = None
        self.applied: tuple[Any, int] | None = None  # last confirmed decision, ROS time (ns)
        self.retry_after = -math.inf
        self.claims_after = -math.inf  # metrics naming another variant are ignored until then
        self.counts = dict.fromkeys(self.COUNTS, 0)

    @property
    def applied_id(self) -> str | None:
        return self.applied[0].config_id if self.applied is not None else None

    def may_send(self, now: float) -> bool:
        """Nothing in flight and no back-off running."""
        return self.call is None and now >= self.retry_after

    def sent(self, decision: Any, now: float, stamp_ns: int, previous: str | None = None,
             attempt: int = 1, reapply: bool = False, claim: bool = False,
             handle: Any = None) -> SwapCall:
        """A request for ``decision`` went out; it is the call in flight from now on."""
        if reapply and attempt == 1:
            self.counts["reapplied"] += 1
        self.call = SwapCall(decision, now, stamp_ns, previous or decision.previous_id, attempt,
                             reapply=reapply, claim=claim, handle=handle)
        return self.call

    def check(self, now: float) -> list[tuple[str, SwapCall]]:
        """What the time alone says about the call in flight, in order: ("timed_out", call)
        once after ``timeout_s``, then ("retry", call) or ("abandoned", call) after twice the
        timeout. After "retry" and "abandoned" no call is in flight: the caller re-sends
        ``call.decision`` with ``attempt + 1`` (retry) or reports the failed swap (abandoned)."""
        call, events = self.call, []
        if call is None:
            return events
        age = now - call.sent_at
        if not call.timed_out and age > self.timeout_s:
            call.timed_out = True
            self.counts["timeouts"] += 1
            events.append(("timed_out", call))
        if age <= 2 * self.timeout_s:
            return events
        # Twice the timeout without an answer: the request is lost (e.g. the server restarted).
        self.call = None
        if call.attempt <= self.retries:
            events.append(("retry", call))
        else:
            self.counts["abandoned"] += 1
            self.retry_after = now + self.timeout_s
            events.append(("abandoned", call))
        return events

    def replied(self, handle: Any, now: float, success: bool, active_id: str | None,
                ) -> tuple[str, SwapCall | None]:
        """The reply to the request ``handle``: ("ignored", None) for a call abandoned earlier,
        ("confirmed", call) when the requested variant serves now (then :meth:`confirm`), or
        ("refused", call) (the caller reports the failed swap; ``active_id`` serves)."""
        call = self.call
        if call is None or handle is not call.handle:
            return "ignored", None
        self.call = None
        if success and active_id == call.target:
            return "confirmed", call
        self.counts["refused"] += 1
        self.retry_after = now + self.timeout_s
        return "refused", call

    def confirm(self, call: SwapCall, now: float, stamp_ns: int, swapped: bool) -> bool:
        """The perception node serves ``call``'s variant (``swapped``: this call changed it).
        False when the call was a claim that turned out false (nothing changed, nothing to
        announce); True when the variant is the applied one from now on. Only a first
        attempt can disprove a claim: a retry finds the variant serving when the abandoned
        attempt got through late (a restarted node answers its first calls slowly)."""
        if call.claim and not swapped and call.attempt == 1:
            self.claims_after = now + self.timeout_s
            self.counts["metrics_rejected"] += 1
            return False
        self.applied = (call.decision, stamp_ns)
        self.counts["swaps" if swapped else "already_serving"] += 1
        return True

    def metrics(self, config_id: str, stamp_ns: int, now: float) -> tuple[str, SwapCall | None]:
        """What PerformanceMetrics naming ``config_id`` (stamped ``stamp_ns``) mean:

        ("confirmed", call): they confirm the unanswered call in flight (which is over: the
        caller drops the request and calls :meth:`confirm`); ("stale", None): they describe a
        variant being replaced; ("rejected", None): a claim already disproved; ("reapply",
        None): the perception node serves another variant than the applied one (restarted?);
        ("observe", None): they describe the applied variant, for the policy."""
        call = self.call
        if call is not None and call.timed_out and config_id == call.target:
            if stamp_ns <= call.sent_ns:  # a window closed before the request cannot confirm it
                self.counts["metrics_stale"] += 1
                return "stale", None
            self.call = None
            return "confirmed", call
        if self.applied is not None and config_id != self.applied_id:
            if call is not None:
                # A call is in flight: these describe the variant it replaces (a restarted
                # perception node's first windows), or the one swapped in before the reply
                # confirms it, or they are forged; the policy waits for the reply.
                self.counts["metrics_stale"] += 1
                return "stale", None
            if now < self.claims_after:
                self.counts["metrics_rejected"] += 1
                return "rejected", None
            return "reapply", None
        return "observe", None

    def should_reapply_on_return(self) -> bool:
        """The perception service came back: send the applied variant again (if any)."""
        return self.applied is not None and self.call is None
