"""evolution_node: keeps the perception node on the variant that fits the current context.

Context and metrics go to the policy (``core.policy.evolution.Evolver``); a swap it decides is sent
as an asynchronous Reconfigure call (never two in flight), whose late, lost or refused replies
and metrics naming another variant ``swap_tracker`` interprets. A swap that took effect is
published with its predictions, reason, swap time and triggering context on /adaspring/config
(latched). The first variant is announced even when perception runs it already. Metrics that
cannot come from the serving perception node are counted and ignored (``metrics_rejected``:
unknown variant, stamp outside ``stamp_tolerance_s``; ``metrics_stale``: a window from before
the last swap, or another variant while a call is in flight). Stale context sends perception to
``safe_config_id`` and /diagnostics says STALE. The variants, and the replies naming them, are
those of the profile table's search space (the served backbone's). Parameters: nodes/settings.py.
"""

from __future__ import annotations

import math
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.task import Future

from adaspring_ros import msg_convert
from adaspring_ros.core.model.profile_table import ProfileError, load_profile_table
from adaspring_ros.core.policy.budgets import BudgetParams
from adaspring_ros.core.policy.evolution import Decision, EvolutionParams, Evolver
from adaspring_ros.core.policy.lambdas import LambdaParams, Lambdas
from adaspring_ros.core.policy.objective import ObjectiveParams
from adaspring_ros.core.policy.swap_tracker import SwapCall, SwapTracker
from adaspring_ros.msg import CompressionConfig as ConfigMsg
from adaspring_ros.msg import ContextState, PerformanceMetrics
from adaspring_ros.nodes.common import diagnostic_array, diagnostic_status, run
from adaspring_ros.nodes.guard import CallbackGuard
from adaspring_ros.nodes.params import declare, parameter_table, read
from adaspring_ros.nodes.qos import (
    CONFIG_QOS,
    CONFIG_TOPIC,
    CONTEXT_QOS,
    CONTEXT_TOPIC,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    METRICS_QOS,
    METRICS_TOPIC,
    RECONFIGURE_SERVICE,
)
from adaspring_ros.nodes.settings import NODE_SETTINGS, EvolutionNodeSettings
from adaspring_ros.srv import Reconfigure

PARAMETERS = parameter_table(*NODE_SETTINGS["evolution_node"])


def policy_params(node: Node, changed=()) -> tuple[EvolutionParams, BudgetParams, LambdaParams,
                                                    Lambdas | None, ObjectiveParams]:
    """The policy's parameter objects from the node's (proposed) parameters; ValueError if
    unusable."""
    own = read(node, EvolutionNodeSettings, changed)
    fixed = None if own.adaptive_lambdas else Lambdas(own.lambda1, own.lambda2, rule="fixed")
    return (read(node, EvolutionParams, changed), read(node, BudgetParams, changed),
            read(node, LambdaParams, changed), fixed, read(node, ObjectiveParams, changed))


class EvolutionNode(Node):
    """Context + metrics in; Reconfigure calls and /adaspring/config + /diagnostics out."""

    def __init__(self) -> None:
        super().__init__("evolution_node")
        self.guard = CallbackGuard(self)
        declare(self, NODE_SETTINGS["evolution_node"])
        self.settings = read(self, EvolutionNodeSettings)
        engine = self.settings.engine
        table = load_profile_table(self.settings.profile_table or None, engine)
        table.require_engine(engine)  # ProfileError (either): cannot start
        self.space = table.space  # the served backbone's, which replies are decoded in
        self.get_logger().info(f"profile table {self.settings.profile_table or 'shipped'} "
                               f"({engine}): {len(table)} variants")
        evolution, budget, lambdas, fixed, objective = policy_params(self)
        self.evolver = Evolver(table, evolution, budget_params=budget, lambda_params=lambdas,
                               lambdas=fixed, objective=objective)
        self.add_on_set_parameters_callback(
            self.guard.parameters(self.validate_parameters_callback))
        self.add_post_set_parameters_callback(self.guard(self.apply_parameters_callback))

        self.swaps = SwapTracker(self.settings.reconfigure_timeout_s,
                                 self.settings.reconfigure_retries)
        self.counts = self.swaps.counts  # context_rejected is counted here too
        self.counts["context_rejected"] = 0
        self.context_msg: ContextState | None = None
        self.context_at = -math.inf
        self.started = time.monotonic()  # reset when the perception service appears
        self.service_ready = False

        self.client = self.create_client(Reconfigure, RECONFIGURE_SERVICE)
        self.config_publisher = self.create_publisher(ConfigMsg, CONFIG_TOPIC, CONFIG_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                           DIAGNOSTICS_QOS)
        self.context_subscription = self.create_subscription(
            ContextState, CONTEXT_TOPIC, self.guard(self.context_callback), CONTEXT_QOS)
        self.metrics_subscription = self.create_subscription(
            PerformanceMetrics, METRICS_TOPIC, self.guard(self.metrics_callback), METRICS_QOS)
        self.decision_timer = self.create_timer(self.settings.decision_period_s,
                                                self.guard(self.decision_callback))
        self.diagnostics_timer = self.create_timer(self.settings.diagnostics_period_s,
                                                   self.guard(self.diagnostics_callback))
        self.get_logger().info(f"waiting for {self.client.service_name}; safe variant "
                               f"{self.evolver.safe_id}")

    # -- parameters -----------------------------------------------------------------------------
    def validate_parameters_callback(self, params) -> SetParametersResult:
        try:  # ranges are checked by rclpy; this catches what spans several parameters
            evolution, *_ = policy_params(self, params)
            safe = evolution.safe_config_id
            if safe is not None and safe not in self.evolver.search:
                raise ValueError(f"safe_config_id {safe!r} is not in the profile table")
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def apply_parameters_callback(self, params) -> None:
        self.evolver.set_params(*policy_params(self))  # validated in the on-set callback
        self.settings = read(self, EvolutionNodeSettings)
        self.swaps.timeout_s = self.settings.reconfigure_timeout_s
        self.swaps.retries = self.settings.reconfigure_retries
        names = {p.name for p in params}
        for name, timer in (("decision_period_s", self.decision_timer),
                            ("diagnostics_period_s", self.diagnostics_timer)):
            if name in names:
                timer.timer_period_ns = int(getattr(self.settings, name) * 1e9)
                timer.reset()
        self.get_logger().info("parameters changed: " + ", ".join(
            f"{p.name}={p.value}" for p in params))

    # -- inputs ---------------------------------------------------------------------------------
    def context_callback(self, msg: ContextState) -> None:
        try:
            context = msg_convert.context_from_msg(msg)
        except msg_convert.ContextError as exc:
            self.counts["context_rejected"] += 1
            self.get_logger().warning(f"rejected context: {exc}", throttle_duration_sec=5.0)
            return
        self.context_msg, self.context_at = msg, time.monotonic()
        self.evolver.observe_context(context, self.context_at)
        self.evolve()  # decide now rather than at the next tick: swaps follow the context fast

    def metrics_callback(self, msg: PerformanceMetrics) -> None:
        now = time.monotonic()
        since = self.swaps.applied[1] if self.swaps.applied is not None else None
        try:
            stamp_ns = msg_convert.check_metrics_origin(
                msg, self.get_clock().now().nanoseconds,
                round(self.settings.stamp_tolerance_s * 1e9), self.evolver.search, since)
        except msg_convert.MetricsError as exc:
            if exc.stale:  # genuine, but about the variant served before the last swap
                self.counts["metrics_stale"] += 1
                return
            self.counts["metrics_rejected"] += 1
            self._log_rejected(str(exc))
            return
        verdict, call = self.swaps.metrics(msg.config_id, stamp_ns, now)
        if verdict == "confirmed":
            self.client.remove_pending_request(call.handle)
            self.get_logger().info(f"metrics confirm the unanswered swap to {msg.config_id}")
            self._confirmed(call, msg.last_swap_ms, now, swapped=call.previous != call.target)
            return
        if verdict == "rejected":
            self._log_rejected(f"metrics name {msg.config_id}, but the perception node just "
                               f"replied that it serves {self.swaps.applied_id}")
            return
        if verdict == "reapply":
            self._reapply(f"perception serves {msg.config_id}, not {self.swaps.applied_id} "
                          f"(restarted?)", msg.config_id, claim=True)
            return  # these metrics describe a variant about to be replaced
        if verdict != "observe":
            return
        # The perception node does not know the budget, so it cannot count deadline misses;
        # an end-to-end p95 over the budget means at least 5 % of the window's frames missed.
        budget = self.context_msg.latency_budget_ms if self.context_msg is not None else math.inf
        misses = int(self.settings.deadline_feedback
                     and math.isfinite(msg.end_to_end_latency_ms_p95)
                     and msg.end_to_end_latency_ms_p95 > budget)
        self.evolver.observe_metrics(msg.config_id, msg.model_latency_ms_p50,
                                     msg.model_latency_ms_p95, now, deadline_misses=misses,
                                     non_model_ms=msg.non_model_latency_ms_p50,
                                     energy_per_frame_mj=msg.energy_per_frame_mj,
                                     max_rate_hz=msg.max_rate_hz)

    def _log_rejected(self, why: str) -> None:
        self.get_logger().warning(f"ignored PerformanceMetrics ({self.counts['metrics_rejected']} "
                                  f"so far): {why}", throttle_duration_sec=5.0)

    # -- the decision loop ----------------------------------------------------------------------
    def decision_callback(self) -> None:
        self.evolve()

    def evolve(self) -> None:
        now = time.monotonic()
        try:
            self._check_call(now)
            ready = self.client.service_is_ready()
            if ready != self.service_ready:
                self._service_changed(ready)
            if not ready or not self.swaps.may_send(now):
                return
            if now - self.started < self.evolver.params.stale_after_s and (
                    self.context_msg is None or self.evolver.active_id is None):
                # At start, give the context node one stale period to be heard, and the
                # perception node one to report the variant it serves and what the rest of a
                # frame costs: chosen without that measure, the first variant assumed a frame
                # costs only its forward pass and anchored the demo on a cheaper variant. The
                # period counts from when the perception service appears (see _service_changed),
                # since a perception node loading its model starts reporting only then.
                return
            decision = self.evolver.decide(now)
            # Until a variant is confirmed, also "keep" one: the perception node then serves a
            # known variant and /adaspring/config announces it (a no-op swap if it ran already).
            announce = self.swaps.applied is None and decision.config is not None \
                and decision.kind != "wait"
            if decision.swap or announce:
                self._send(decision, now)
        except Exception as exc:  # the policy or a message failing must not stop the node
            self.guard.record("evolve", exc)

    def _service_changed(self, ready: bool) -> None:
        self.service_ready = ready
        if not ready:
            self.get_logger().warning(f"{self.client.service_name} went away; waiting for it")
            return
        self.get_logger().info(f"{self.client.service_name} is available")
        if self.swaps.applied is None:  # nothing chosen yet: its first report is due from now
            self.started = time.monotonic()
        if self.swaps.should_reapply_on_return():
            self._reapply("the perception service is back (restarted?)", None)

    def _send(self, decision: Decision, now: float, previous: str | None = None,
              attempt: int = 1, reapply: bool = False, claim: bool = False) -> None:
        request = Reconfigure.Request(config=msg_convert.config_to_msg(decision.config, ConfigMsg))
        future = self.client.call_async(request)
        self.swaps.sent(decision, now, self.get_clock().now().nanoseconds, previous, attempt,
                        reapply=reapply, claim=claim, handle=future)
        future.add_done_callback(self.guard(self.reconfigure_done_callback))

    def _reapply(self, why: str, serving: str | None, claim: bool = False) -> None:
        decision, _ = self.swaps.applied
        self.get_logger().warning(f"{why}: applying {decision.config_id} again")
        self._send(decision, time.monotonic(), previous=serving or "unknown", reapply=True,
                   claim=claim)

    def _check_call(self, now: float) -> None:
        for event, call in self.swaps.check(now):
            wanted = call.target
            if event == "timed_out":
                self.get_logger().warning(
                    f"no reply to Reconfigure({wanted}) after {self.swaps.timeout_s:g} s; "
                    f"waiting for the reply or metrics to tell whether it took effect")
                continue
            self.client.remove_pending_request(call.handle)
            if event == "retry":
                self.get_logger().warning(f"retrying Reconfigure({wanted}), attempt "
                                          f"{call.attempt + 1}")
                self._send(call.decision, now, call.previous, call.attempt + 1, call.reapply,
                           call.claim)
            else:
                self.get_logger().error(f"giving up on Reconfigure({wanted}) after "
                                        f"{call.attempt} attempt(s)")
                self.evolver.swap_done(wanted, now, ok=False)

    def reconfigure_done_callback(self, future: Future) -> None:
        now = time.monotonic()
        try:
            response = future.result()
            active = msg_convert.config_from_msg(response.active, self.space).id
        except Exception as exc:  # a broken reply is a failed call
            response, active = None, f"unknown ({exc})"
        success = response is not None and response.success
        outcome, call = self.swaps.replied(future, now, success, active)
        if outcome == "ignored":
            return  # abandoned earlier; its outcome was reconciled from metrics
        if outcome == "confirmed":
            self._confirmed(call, response.swap_ms, now, swapped=response.swapped)
            return
        message = response.message if response is not None else active
        self.get_logger().error(f"perception refused {call.target}: {message}")
        self.evolver.swap_done(call.target, now, ok=False)
        if response is not None and active in self.evolver.search:
            self.evolver.swap_done(active, now, ok=True)  # trust what the node says it serves

    def _confirmed(self, call: SwapCall, swap_ms: float, now: float, swapped: bool) -> None:
        decision = call.decision
        if not self.swaps.confirm(call, now, self.get_clock().now().nanoseconds, swapped):
            # Metrics said the perception node serves another variant; it says it served this
            # one all along, so they were not its own (forged, or from another graph). Not
            # throttled with the other rejections: muting the claims bounds it to one line per
            # reconfigure_timeout_s, and it is the one that says what happened.
            self.get_logger().warning(
                f"PerformanceMetrics named {call.previous}, but the perception node served "
                f"{decision.config_id} already: nothing changed; such metrics are ignored for "
                f"the next {self.swaps.timeout_s:g} s")
            return
        self.evolver.swap_done(decision.config_id, now, ok=True)
        reason = decision.reason
        if call.reapply:
            reason = f"re-applied after a perception restart; chosen because: {reason}"
        took = f"{swap_ms:.1f} ms" if math.isfinite(swap_ms) else "unknown time"
        self.get_logger().info(f"swap {call.previous or 'unknown'} -> {decision.config_id} "
                               f"(took {took}): {reason}")
        self.config_publisher.publish(self._config_msg(decision, reason, swap_ms))

    def _config_msg(self, decision: Decision, reason: str, swap_ms: float) -> ConfigMsg:
        prediction = decision.prediction  # the policy predicts even for a stale fallback
        msg = msg_convert.config_to_msg(
            decision.config, ConfigMsg, predicted_accuracy_percent=100.0 * prediction.accuracy,
            predicted_latency_ms=prediction.latency_ms, predicted_energy_mj=prediction.energy_mj,
            storage_bytes=prediction.storage_bytes, reason=reason, context=self.context_msg,
            swap_ms=swap_ms if math.isfinite(swap_ms) else math.nan)
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    # -- health ---------------------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        age = time.monotonic() - self.context_at
        if self.context_msg is None or age > self.evolver.params.stale_after_s:
            what = "no context yet" if self.context_msg is None else f"context {age:.1f} s old"
            context = (DiagnosticStatus.STALE,
                       f"{what}: falling back to safe variant {self.evolver.safe_id}")
        else:
            context = (DiagnosticStatus.OK, f"context {age:.1f} s old")
        call, applied = self.swaps.call, self.swaps.applied_id or "none"
        perception = (DiagnosticStatus.OK, f"serving {applied}")
        if not self.service_ready:
            perception = (DiagnosticStatus.WARN, f"waiting for {self.client.service_name}")
        elif call is not None:
            perception = (DiagnosticStatus.WARN if call.timed_out else DiagnosticStatus.OK,
                          f"swap to {call.target} in flight")
        values = {f"policy_{k}": v for k, v in self.evolver.status().items()}
        values.update({"applied": applied, **self.counts, "callback_errors": self.guard.total})
        self.diagnostics_publisher.publish(diagnostic_array(
            self, diagnostic_status("adaspring: evolution_node context", *context, values),
            diagnostic_status("adaspring: evolution_node perception", *perception, values)))


def main(args: list[str] | None = None) -> None:
    run(EvolutionNode, "evolution_node", args, (ProfileError,))

if __name__ == "__main__":
    main()
