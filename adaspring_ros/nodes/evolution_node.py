"""evolution_node: keeps the perception node on the variant that fits the current context.

Subscribes /adaspring/context and /adaspring/metrics and feeds them to the evolution policy
(adaspring_ros.core.evolution.Evolver over the profile table); when the policy decides to swap, it
calls the perception node's Reconfigure service asynchronously (never blocking the executor, never
two requests in flight) and, once the swap took effect, publishes the active variant with its
predictions, reason and triggering context on /adaspring/config (latched) and logs it.

Robustness around the service call:
  * the node waits for the service at start (it may start before the perception node);
  * a call with no reply after ``reconfigure_timeout_s`` is not re-sent blindly: the late reply
    or a PerformanceMetrics message naming the requested variant still confirms it; only after a
    second timeout is the request abandoned and retried (``reconfigure_retries``); a retry names
    the same variant, which the perception node serves already if the first call got through,
    so a slow swap is never done twice;
  * the first variant is announced even when the policy keeps what perception runs, so
    /adaspring/config always holds the active variant;
  * when the perception node restarts (the service comes back, or its metrics name a variant
    other than the one applied) the active variant is applied again; if the perception node
    replies that it served that variant already, the metrics were not its own: they are
    counted in ``metrics_rejected``, nothing is published, and further such claims are ignored
    for ``reconfigure_timeout_s``.
PerformanceMetrics that cannot come from the perception node serving now are counted and
ignored: a variant outside the profile table, a stamp that is zero, negative or further than
``stamp_tolerance_s`` from this node's clock (``metrics_rejected``), or a window closed before the
last confirmed swap or naming another variant while a call is in flight (``metrics_stale``:
genuine ones describe a variant being replaced). Each ignored message is counted once.
``swaps`` counts only calls after which the perception node served another variant, so it
equals the perception node's own ``swaps`` while neither restarts (a call that found the variant
serving already, e.g. the first announcement, counts in ``already_serving``).
Stale context (none for ``stale_after_s``) sends the perception node to ``safe_variant`` (the
policy decides that) and /diagnostics reports the context as STALE.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.task import Future

from adaspring_ros import msg_convert
from adaspring_ros.core.context import BudgetParams, LambdaParams, Lambdas
from adaspring_ros.core.engine import DEFAULT_ENGINE
from adaspring_ros.core.evolution import Decision, EvolutionParams, Evolver
from adaspring_ros.core.profile_table import ProfileError
from adaspring_ros.core.search import ObjectiveParams, default_table
from adaspring_ros.msg import CompressionConfig as ConfigMsg
from adaspring_ros.msg import ContextState, PerformanceMetrics
from adaspring_ros.nodes.guard import CallbackGuard
from adaspring_ros.nodes.params import describe
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
from adaspring_ros.srv import Reconfigure

RO = {"read_only": True}
SECONDS = (0.0, 86400.0)
# name, default, descriptor, (core group, core field): the policy's parameters map one to one to
# EvolutionParams / BudgetParams / LambdaParams fields; "node" ones are this node's own.
PARAMETERS = (
    # -- trigger policy (EvolutionParams)
    ("gain_threshold", 0.15, describe("hysteresis: objective gain a non-urgent swap needs, in "
                                      "accuracy points (absolute)", floating=(0.0, 100.0)),
     ("evolution", "gain_threshold")),
    ("min_swap_interval_s", 5.0, describe("least time between a swap and a non-urgent swap, s",
                                          floating=SECONDS), ("evolution", "min_swap_interval_s")),
    ("min_urgent_interval_s", 1.0, describe("least time between a swap and a budget-violation "
                                            "swap, s (<= min_swap_interval_s)", floating=SECONDS),
     ("evolution", "min_urgent_interval_s")),
    ("headroom", 0.15, describe("fraction of the latency and energy budgets kept free when "
                                "choosing (Schmitt trigger)", floating=(0.0, 0.9)),
     ("evolution", "headroom")),
    ("stale_after_s", 3.0, describe("context older than this is stale: go to safe_variant, s",
                                    floating=(0.05, 3600.0)), ("evolution", "stale_after_s")),
    ("safe_variant", "", describe("config id used while the context is stale ('' = the fastest "
                                  "variant of the profile table)"),
     ("evolution", "safe_config_id")),
    ("recovery_s", 10.0, describe("back-off before re-trying a variant left for a violation, s",
                                  floating=SECONDS), ("evolution", "recovery_s")),
    ("violation_memory_s", 600.0, describe("how long budget violations count for the back-off, s",
                                           floating=SECONDS), ("evolution", "violation_memory_s")),
    ("settle_s", 1.0, describe("metrics ignored this long after a swap, s",
                               floating=(0.0, 600.0)), ("evolution", "settle_s")),
    ("pending_timeout_s", 15.0, describe("a swap the policy asked for and never saw confirmed is "
                                         "forgotten after this, s", floating=(0.1, 3600.0)),
     ("evolution", "pending_timeout_s")),
    ("contention_alpha", 0.5, describe("smoothing of the measured contention factor (weight of "
                                       "the newest window)", floating=(0.01, 1.0)),
     ("evolution", "contention_alpha")),
    ("contention_min", 0.5, describe("lower bound of the contention factor",
                                     floating=(0.01, 1.0)), ("evolution", "contention_min")),
    ("contention_max", 10.0, describe("upper bound of the contention factor",
                                      floating=(1.0, 1000.0)), ("evolution", "contention_max")),
    ("learn_tail", True, describe("learn the p95/p50 latency tail ratio from the metrics "
                                  "(false = keep the profile table's)"),
     ("evolution", "learn_tail")),
    ("tail_max", 10.0, describe("upper bound of the learnt tail ratio", floating=(1.0, 1000.0)),
     ("evolution", "tail_max")),
    # -- budgets (BudgetParams)
    ("fps", 10.0, describe("frame rate perception must sustain (energy budget)",
                           floating=(0.01, 1000.0)), ("budget", "fps")),
    ("battery_capacity_wh", 20.0, describe("battery capacity, Wh", floating=(0.01, 1e6)),
     ("budget", "battery_capacity_wh")),
    ("perception_energy_share", 0.05, describe("fraction of the battery perception may spend",
                                               floating=(0.001, 1.0)),
     ("budget", "perception_energy_share")),
    ("mission_duration_s", 0.0, describe("mission length for the energy budget, s (0 = no "
                                         "mission: no energy budget)", floating=(0.0, 1e7)),
     ("budget", "mission_duration_s")),
    ("latency_margin", 0.9, describe("fraction of the application's latency budget the forward "
                                     "pass may take", floating=(0.01, 1.0)),
     ("budget", "latency_margin")),
    ("drift_tolerance", 0.1, describe("measured/predicted latency ratio tolerated before the "
                                      "budget is tightened", floating=(0.0, 10.0)),
     ("budget", "drift_tolerance")),
    ("min_latency_factor", 0.5, describe("the tightening never goes below this fraction",
                                         floating=(0.01, 1.0)), ("budget", "min_latency_factor")),
    ("memory_reserve_mb", 256.0, describe("memory left to the rest of the system, MB",
                                          floating=(0.0, 1e6)), ("budget", "memory_reserve_mb")),
    ("memory_limit_mb", 0.0, describe("hard cap on the variant's peak memory, MB (0 = none)",
                                      floating=(0.0, 1e6)), ("budget", "memory_limit_mb")),
    ("storage_limit_bytes", 0, describe("storage the variant may occupy, bytes (0 = no limit)",
                                        integer=(0, 2**40)), ("budget", "storage_limit_bytes")),
    ("min_accuracy", 0.0, describe("least accuracy a variant must have, fraction (0 = none)",
                                   floating=(0.0, 1.0)), ("budget", "min_accuracy")),
    # -- λ1 (accuracy) and λ2 (energy efficiency)
    ("adaptive_lambdas", True, describe("move λ with the battery (rules below); false = use "
                                        "lambda_accuracy / lambda_energy as given"),
     ("node", "")),
    ("lambda_accuracy", 0.7, describe("λ1 when adaptive_lambdas is false",
                                      floating=(0.0, 1.0)), ("node", "")),
    ("lambda_energy", 0.3, describe("λ2 when adaptive_lambdas is false", floating=(0.0, 1.0)),
     ("node", "")),
    ("lambda2_external", 0.0, describe("λ2 on external power or without a battery (0 = "
                                       "energy is free: the most accurate feasible variant)",
                                       floating=(0.0, 1.0)), ("lambda", "lambda2_external")),
    ("lambda2_min", 0.2, describe("λ2 at or above battery_high_percent", floating=(0.0, 1.0)),
     ("lambda", "lambda2_min")),
    ("lambda2_max", 0.6, describe("λ2 at or below battery_low_percent", floating=(0.0, 1.0)),
     ("lambda", "lambda2_max")),
    ("battery_high_percent", 50.0, describe("battery above which λ2 = lambda2_min, %",
                                            floating=(0.0, 100.0)),
     ("lambda", "battery_high_percent")),
    ("battery_low_percent", 15.0, describe("battery below which λ2 = lambda2_max, %",
                                           floating=(0.0, 100.0)),
     ("lambda", "battery_low_percent")),
    ("hot_temperature_c", 85.0, describe("CPU temperature from which λ2 >= lambda2_hot, C",
                                         floating=(-50.0, 200.0)),
     ("lambda", "hot_temperature_c")),
    ("lambda2_hot", 0.5, describe("least λ2 while the CPU is hot", floating=(0.0, 1.0)),
     ("lambda", "lambda2_hot")),
    # -- the objective (ObjectiveParams, core/search.py)
    ("max_accuracy_loss_pt", 3.0, describe("most accuracy points the policy may trade for energy "
                                           "against the table's most accurate variant",
                                           floating=(0.0, 100.0)),
     ("objective", "max_accuracy_loss_pt")),
    ("energy_pct_per_point", 10.0, describe("% of the frame energy worth one accuracy point at "
                                            "λ1 = λ2", floating=(0.01, 1e6)),
     ("objective", "energy_pct_per_point")),
    # -- this node
    ("profile_table", "", describe("profile table JSON ('' = the shipped table of the engine: "
                                   "models/profile_table.json, or "
                                   "models/profile_table_torch.json for torch)", **RO),
     ("node", "")),
    ("engine", DEFAULT_ENGINE, describe("inference engine the perception node serves in; the "
                                        "profile table must have been measured in it", **RO),
     ("node", "")),
    ("decision_period_s", 0.2, describe("how often the policy is consulted besides on each "
                                        "context message, s", floating=(0.01, 60.0)),
     ("node", "")),
    ("reconfigure_timeout_s", 3.0, describe("a Reconfigure call unanswered this long is "
                                            "reconciled, then retried, s",
                                            floating=(0.05, 600.0)), ("node", "")),
    ("reconfigure_retries", 2, describe("retries of a Reconfigure call that got no answer",
                                        integer=(0, 100)), ("node", "")),
    ("diagnostics_period_s", 1.0, describe("period of /diagnostics, s", floating=(0.1, 60.0)),
     ("node", "")),
    ("stamp_tolerance_s", 10.0, describe("PerformanceMetrics stamped further than this from the "
                                         "node's clock (either way) are counted in "
                                         "metrics_rejected and ignored, s",
                                         floating=(0.001, 86400.0)), ("node", "")),
    ("deadline_feedback", False, describe("also tell the policy about end-to-end deadline "
                                          "misses (perception's end-to-end p95 over the "
                                          "budget); it then swaps back and forth when no "
                                          "variant can meet the budget"), ("node", "")),
)
TARGETS = {name: target for name, _default, _descriptor, target in PARAMETERS}


def core_params(values: dict) -> tuple[EvolutionParams, BudgetParams, LambdaParams,
                                       Lambdas | None, ObjectiveParams]:
    """The core policy's parameter objects from ROS parameter values; ValueError if unusable.

    0 stands for "none" where the core takes None (no mission, no memory or storage cap).
    """
    groups: dict[str, dict] = {"evolution": {}, "budget": {}, "lambda": {}, "objective": {}}
    for name, (group, field) in TARGETS.items():
        if group in groups:
            groups[group][field] = values[name]
    for field in ("mission_duration_s", "memory_limit_mb", "storage_limit_bytes"):
        groups["budget"][field] = groups["budget"][field] or None
    groups["evolution"]["safe_config_id"] = groups["evolution"]["safe_config_id"] or None
    fixed = None
    if not values["adaptive_lambdas"]:
        fixed = Lambdas(values["lambda_accuracy"], values["lambda_energy"], rule="fixed")
    return (EvolutionParams(**groups["evolution"]), BudgetParams(**groups["budget"]),
            LambdaParams(**groups["lambda"]), fixed, ObjectiveParams(**groups["objective"]))


@dataclass
class Call:
    """The one Reconfigure request in flight."""

    decision: Decision
    future: Future
    sent_at: float
    sent_ns: int  # ROS time of sending: metrics confirming the call must be later
    previous: str | None = None  # what the perception node served before
    attempt: int = 1
    timed_out: bool = False
    reapply: bool = False  # applying the active variant again after a perception restart
    claim: bool = False  # the re-application was asked for by metrics naming another variant


class EvolutionNode(Node):
    """Context + metrics in; Reconfigure calls and /adaspring/config + /diagnostics out."""

    def __init__(self) -> None:
        super().__init__("evolution_node")
        self.guard = CallbackGuard(self)
        for name, default, descriptor, _target in PARAMETERS:
            self.declare_parameter(name, default, descriptor)
        engine = self.get_parameter("engine").value
        table, note = default_table(self.get_parameter("profile_table").value or None,
                                    engine=engine)
        table.require_engine(engine)  # ProfileError: cannot start
        self.get_logger().info(f"{note}: {len(table)} variants")
        evolution, budget, lambdas, fixed, objective = core_params(self._values())
        self.evolver = Evolver(table, evolution, budget_params=budget, lambda_params=lambdas,
                               lambdas=fixed, objective=objective)
        self.add_on_set_parameters_callback(
            self.guard.parameters(self.validate_parameters_callback))
        self.add_post_set_parameters_callback(self.guard(self.apply_parameters_callback))

        self.call: Call | None = None
        self.applied: tuple[Decision, float] | None = None  # last confirmed swap, ROS time (ns)
        self.context_msg: ContextState | None = None
        self.context_at = -math.inf
        self.started = time.monotonic()
        self.service_ready = False
        self.retry_after = -math.inf
        self.claims_after = -math.inf  # metrics naming another variant are ignored until then
        self.counts = {"swaps": 0, "already_serving": 0, "reapplied": 0, "refused": 0,
                       "timeouts": 0, "abandoned": 0, "context_rejected": 0,
                       "metrics_rejected": 0, "metrics_stale": 0}

        self.client = self.create_client(Reconfigure, RECONFIGURE_SERVICE)
        self.config_publisher = self.create_publisher(ConfigMsg, CONFIG_TOPIC, CONFIG_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                           DIAGNOSTICS_QOS)
        self.context_subscription = self.create_subscription(
            ContextState, CONTEXT_TOPIC, self.guard(self.context_callback), CONTEXT_QOS)
        self.metrics_subscription = self.create_subscription(
            PerformanceMetrics, METRICS_TOPIC, self.guard(self.metrics_callback), METRICS_QOS)
        self.decision_timer = self.create_timer(self.get_parameter("decision_period_s").value,
                                                self.guard(self.decision_callback))
        self.diagnostics_timer = self.create_timer(
            self.get_parameter("diagnostics_period_s").value,
            self.guard(self.diagnostics_callback))
        self.get_logger().info(f"waiting for {self.client.service_name}; safe variant "
                               f"{self.evolver.safe_id}")

    # -- parameters -----------------------------------------------------------------------------
    def _values(self, changed=()) -> dict:
        values = {name: self.get_parameter(name).value for name in TARGETS}
        values.update({p.name: p.value for p in changed})
        return values

    def validate_parameters_callback(self, params) -> SetParametersResult:
        try:  # ranges are checked by rclpy; this catches what spans several parameters
            evolution, *_ = core_params(self._values(params))
            safe = evolution.safe_config_id
            if safe is not None and safe not in self.evolver.search:
                raise ValueError(f"safe_variant {safe!r} is not in the profile table")
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def apply_parameters_callback(self, params) -> None:
        self.evolver.set_params(*core_params(self._values()))  # validated in the on-set callback
        names = {p.name for p in params}
        for name, timer in (("decision_period_s", self.decision_timer),
                            ("diagnostics_period_s", self.diagnostics_timer)):
            if name in names:
                timer.timer_period_ns = int(self.get_parameter(name).value * 1e9)
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
        since = self.applied[1] if self.applied is not None else None
        try:
            stamp_ns = msg_convert.check_metrics_origin(
                msg, self.get_clock().now().nanoseconds,
                round(self.get_parameter("stamp_tolerance_s").value * 1e9),
                self.evolver.search, since)
        except msg_convert.MetricsError as exc:
            if exc.stale:  # genuine, but about the variant served before the last swap
                self.counts["metrics_stale"] += 1
                return
            self._reject_metrics(str(exc))
            return
        call = self.call
        if call is not None and call.timed_out and msg.config_id == call.decision.config_id:
            if stamp_ns <= call.sent_ns:  # a window closed before the request cannot confirm it
                self.counts["metrics_stale"] += 1
                return
            self.client.remove_pending_request(call.future)
            self.call = None
            self.get_logger().info(f"metrics confirm the unanswered swap to {msg.config_id}")
            self._confirmed(call, msg.last_swap_ms, now,
                            swapped=call.previous != call.decision.config_id)
        elif self.applied is not None and msg.config_id != self.applied[0].config_id:
            if call is not None:
                # A call is in flight: these describe the variant it replaces (a restarted
                # perception node's first windows), or the one swapped in before the reply
                # confirms it, or they are forged; the policy waits for the reply.
                self.counts["metrics_stale"] += 1
                return
            if now < self.claims_after:
                self._reject_metrics(f"metrics name {msg.config_id}, but the perception node "
                                     f"just replied that it serves {self.applied[0].config_id}")
                return
            self._reapply(f"perception serves {msg.config_id}, not "
                          f"{self.applied[0].config_id} (restarted?)", msg.config_id, claim=True)
            return  # these metrics describe a variant about to be replaced
        # The perception node does not know the budget, so it cannot count deadline misses;
        # an end-to-end p95 over the budget means at least 5 % of the window's frames missed.
        budget = self.context_msg.latency_budget_ms if self.context_msg is not None else math.inf
        misses = int(self.get_parameter("deadline_feedback").value
                     and math.isfinite(msg.end_to_end_latency_ms_p95)
                     and msg.end_to_end_latency_ms_p95 > budget)
        self.evolver.observe_metrics(msg.config_id, msg.model_latency_ms_p50,
                                     msg.model_latency_ms_p95, now, deadline_misses=misses,
                                     non_model_ms=msg.non_model_latency_ms_p50,
                                     energy_per_frame_mj=msg.energy_per_frame_mj)

    def _reject_metrics(self, why: str) -> None:
        self.counts["metrics_rejected"] += 1
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
            if self.call is not None or not ready or now < self.retry_after:
                return
            if now - self.started < self.evolver.params.stale_after_s and (
                    self.context_msg is None or self.evolver.active_id is None):
                # At start, give the context node one stale period to be heard, and the
                # perception node one to report the variant it serves and what the rest of a
                # frame costs: chosen without that measure, the first variant assumed a frame
                # costs only its forward pass and anchored the demo on a cheaper variant.
                return
            decision = self.evolver.decide(now)
            # Until a variant is confirmed, also "keep" one: the perception node then serves a
            # known variant and /adaspring/config announces it (a no-op swap if it ran already).
            announce = self.applied is None and decision.config is not None \
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
        if self.applied is not None and self.call is None:
            self._reapply("the perception service is back (restarted?)", None)

    def _send(self, decision: Decision, now: float, previous: str | None = None,
              attempt: int = 1, reapply: bool = False, claim: bool = False) -> None:
        request = Reconfigure.Request(config=msg_convert.config_to_msg(decision.config, ConfigMsg))
        future = self.client.call_async(request)
        self.call = Call(decision, future, now, self.get_clock().now().nanoseconds,
                         previous or decision.previous_id, attempt, reapply=reapply, claim=claim)
        future.add_done_callback(self.guard(self.reconfigure_done_callback))

    def _reapply(self, why: str, serving: str | None, claim: bool = False) -> None:
        decision, _ = self.applied
        self.counts["reapplied"] += 1
        self.get_logger().warning(f"{why}: applying {decision.config_id} again")
        self._send(decision, time.monotonic(), previous=serving or "unknown", reapply=True,
                   claim=claim)

    def _check_call(self, now: float) -> None:
        call, timeout = self.call, self.get_parameter("reconfigure_timeout_s").value
        if call is None or call.future.done():
            return
        age = now - call.sent_at
        if not call.timed_out and age > timeout:
            call.timed_out = True
            self.counts["timeouts"] += 1
            self.get_logger().warning(
                f"no reply to Reconfigure({call.decision.config_id}) after {timeout:g} s; "
                f"waiting for the reply or metrics to tell whether it took effect")
        if age <= 2 * timeout:
            return
        # Twice the timeout without an answer: the request is lost (e.g. the server restarted).
        self.client.remove_pending_request(call.future)
        self.call = None
        if call.attempt <= self.get_parameter("reconfigure_retries").value:
            self.get_logger().warning(f"retrying Reconfigure({call.decision.config_id}), "
                                      f"attempt {call.attempt + 1}")
            self._send(call.decision, now, call.previous, call.attempt + 1, call.reapply,
                       call.claim)
        else:
            self.counts["abandoned"] += 1
            self.get_logger().error(f"giving up on Reconfigure({call.decision.config_id}) after "
                                    f"{call.attempt} attempt(s)")
            self.evolver.swap_done(call.decision.config_id, now, ok=False)
            self.retry_after = now + timeout

    def reconfigure_done_callback(self, future: Future) -> None:
        call = self.call
        if call is None or future is not call.future:
            return  # abandoned earlier; its outcome was reconciled from metrics
        self.call = None
        now = time.monotonic()
        try:
            response = future.result()
            active = msg_convert.config_from_msg(response.active).id
        except Exception as exc:  # a broken reply is a failed call
            response, active = None, f"unknown ({exc})"
        wanted = call.decision.config_id
        if response is not None and response.success and active == wanted:
            self._confirmed(call, response.swap_ms, now, swapped=response.swapped)
            return
        self.counts["refused"] += 1
        message = response.message if response is not None else active
        self.get_logger().error(f"perception refused {wanted}: {message}")
        self.evolver.swap_done(wanted, now, ok=False)
        if response is not None and active in self.evolver.search:
            self.evolver.swap_done(active, now, ok=True)  # trust what the node says it serves
        self.retry_after = now + self.get_parameter("reconfigure_timeout_s").value

    def _confirmed(self, call: Call, swap_ms: float, now: float, swapped: bool) -> None:
        decision = call.decision
        if call.claim and not swapped:
            # Metrics said the perception node serves another variant; it says it served this
            # one all along, so they were not its own (forged, or from another graph).
            self.claims_after = now + self.get_parameter("reconfigure_timeout_s").value
            self.counts["metrics_rejected"] += 1
            # Not throttled with the other rejections: muting the claims bounds it to one line
            # per reconfigure_timeout_s, and it is the one that says what happened.
            self.get_logger().warning(
                f"PerformanceMetrics named {call.previous}, but the perception node served "
                f"{decision.config_id} already: nothing changed; such metrics are ignored for "
                f"the next {self.get_parameter('reconfigure_timeout_s').value:g} s")
            return
        self.evolver.swap_done(decision.config_id, now, ok=True)
        self.applied = (decision, self.get_clock().now().nanoseconds)
        self.counts["swaps" if swapped else "already_serving"] += 1
        reason = decision.reason
        if call.reapply:
            reason = f"re-applied after a perception restart; chosen because: {reason}"
        took = f"{swap_ms:.1f} ms" if math.isfinite(swap_ms) else "unknown time"
        self.get_logger().info(f"swap {call.previous or 'unknown'} -> {decision.config_id} "
                               f"({decision.kind}, took {took}): {reason}")
        self.config_publisher.publish(self._config_msg(decision, f"{reason} (swap {took})"))

    def _config_msg(self, decision: Decision, reason: str) -> ConfigMsg:
        prediction = decision.prediction  # the policy predicts even for a stale fallback
        msg = msg_convert.config_to_msg(
            decision.config, ConfigMsg, predicted_accuracy_percent=100.0 * prediction.accuracy,
            predicted_latency_ms=prediction.latency_ms, predicted_energy_mj=prediction.energy_mj,
            storage_bytes=prediction.storage_bytes, reason=reason, context=self.context_msg)
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    # -- health ---------------------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        age = time.monotonic() - self.context_at
        stale_after = self.get_parameter("stale_after_s").value
        context = DiagnosticStatus(name="adaspring: evolution_node context", hardware_id="cpu")
        if self.context_msg is None or age > stale_after:
            what = "no context yet" if self.context_msg is None else f"context {age:.1f} s old"
            context.level = DiagnosticStatus.STALE
            context.message = f"{what}: falling back to safe variant {self.evolver.safe_id}"
        else:
            context.level, context.message = DiagnosticStatus.OK, f"context {age:.1f} s old"
        perception = DiagnosticStatus(name="adaspring: evolution_node perception",
                                      hardware_id="cpu", level=DiagnosticStatus.OK)
        applied = self.applied[0].config_id if self.applied else "none"
        if not self.service_ready:
            perception.level = DiagnosticStatus.WARN
            perception.message = f"waiting for {self.client.service_name}"
        elif self.call is not None:
            perception.message = f"swap to {self.call.decision.config_id} in flight"
            if self.call.timed_out:
                perception.level = DiagnosticStatus.WARN
        else:
            perception.message = f"serving {applied}"
        values = {f"policy_{k}": str(v) for k, v in self.evolver.status().items()}
        values.update({"applied": applied, **{k: str(v) for k, v in self.counts.items()}})
        values["callback_errors"] = str(self.guard.total)
        for status in (context, perception):
            status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[context, perception])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)


def main(args: list[str] | None = None) -> None:
    try:
        with rclpy.init(args=args):
            try:
                node = EvolutionNode()
            except (ValueError, OSError, ProfileError, ParameterException) as exc:
                rclpy.logging.get_logger("evolution_node").fatal(f"cannot start: {exc}")
                raise SystemExit(2) from None
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
