"""Every parameter of every node, declared once: name, default, range and description.

The policy's parameters are the fields of its core dataclasses (EvolutionParams, BudgetParams,
LambdaParams, ObjectiveParams); what only a node needs is a field of that node's dataclass here.
:data:`NODE_SETTINGS` lists, per node name, the dataclasses whose settings the node declares as
parameters of the same names (``adaspring_ros.nodes.params``); config/adaspring.yaml holds one
key per parameter with the same default (test/test_parameters.py checks both).

No rclpy here, so the parameter set can be checked without ROS.
"""

from __future__ import annotations

from dataclasses import dataclass

from adaspring_ros.core.energy import DEFAULT_DEVICE
from adaspring_ros.core.model.engine import DEFAULT_ENGINE, ENGINES
from adaspring_ros.core.policy.budgets import BudgetParams
from adaspring_ros.core.policy.evolution import EvolutionParams
from adaspring_ros.core.policy.lambdas import LambdaParams
from adaspring_ros.core.policy.objective import ObjectiveParams
from adaspring_ros.core.serving.image_codec import ENCODINGS
from adaspring_ros.core.validation import setting
from adaspring_ros.nodes.names import BATTERY_TOPIC, IMAGE_TOPIC, TRANSPORTS

__all__ = ["PerceptionSettings", "CameraReplaySettings", "ContextSettings",
           "EvolutionNodeSettings", "NODE_SETTINGS", "CAMERA_SOURCES", "CONTEXT_SOURCES",
           "INTERPOLATIONS", "MAX_SIDE"]

SECONDS = (0.0, 86400.0)
CAMERA_SOURCES = ("fashion_mnist", "image_folder", "bag")
CONTEXT_SOURCES = ("psutil", "battery_state", "scenario")
INTERPOLATIONS = ("nearest", "bilinear")
MAX_SIDE = 8192


@dataclass(frozen=True)
class PerceptionSettings:
    """perception_node: read-only ones are fixed at start, the rest may change at run time."""

    image_topic: str = setting(IMAGE_TOPIC, "camera topic to classify (its base name: with "
                               "transport compressed the node reads <image_topic>/compressed)",
                               read_only=True)
    transport: str = setting(
        "raw", "raw: sensor_msgs/Image (mono8, mono16, rgb8, bgr8, rgba8, bgra8, yuv422/uyvy, "
        "yuv422_yuy2/yuyv); compressed: sensor_msgs/CompressedImage (jpeg, png) on "
        "<image_topic>/compressed", read_only=True, choices=TRANSPORTS)
    backbone_path: str = setting("", "trained backbone checkpoint ('' = the shipped "
                                 "models/backbone.pt); its .sha256 must match", read_only=True)
    engine: str = setting(DEFAULT_ENGINE, "inference engine for the variants (torch is the "
                          "reference)", read_only=True, choices=ENGINES)
    profile_table: str = setting(
        "", "profile table of the engine ('' = the engine's shipped table): its int8 activation "
        "ranges make profiled int8 variants compute in int8 (onnxruntime)", read_only=True)
    initial_config: str = setting("full", "variant served at start: full, smallest or a config "
                                  "id", read_only=True)
    timing_log: str = setting("", "CSV file of per-frame timings ('' = off; for profiling)",
                              read_only=True)
    num_threads: int = setting(1, "engine intra-op threads (1 is fastest at batch 1 here; in "
                               "onnxruntime from the next variant built)", range=(1, 64))
    metrics_period_s: float = setting(1.0, "period of PerformanceMetrics and /diagnostics, s",
                                      range=(0.1, 60.0))
    max_cached_variants: int = setting(8, "materialised variants kept for fast swaps",
                                       range=(1, 256))
    stamp_tolerance_s: float = setting(
        10.0, "an image stamped further than this from the node's clock (either way) is "
        "classified but counted in stamps_rejected and left out of the end-to-end latency, s",
        range=(0.001, 86400.0))
    device_power_profile: str = setting(
        DEFAULT_DEVICE, "device power model for energy per frame when RAPL is not readable: a "
        "name in config/devices/ or a .yaml path")
    managed: bool = setting(False, "false: the node configures and activates itself at start; "
                            "true: it waits, unconfigured, for lifecycle transitions (a "
                            "lifecycle manager or the launch file)", read_only=True)
    max_rate_hz: float = setting(0.0, "classify at most this many frames per second, the rest "
                                 "are counted in frames_skipped (0 = every frame)",
                                 range=(0.0, 1000.0))
    debug_image: bool = setting(False, "publish annotated frames (class, score, variant, "
                                "end-to-end latency) on /adaspring/debug_image")
    debug_image_rate_hz: float = setting(2.0, "most annotated frames per second when "
                                         "debug_image is on", range=(0.1, 30.0))


@dataclass(frozen=True)
class CameraReplaySettings:
    """camera_replay_node: read-only ones pick the source, the rest may change at run time."""

    source: str = setting("fashion_mnist", "where the frames come from", read_only=True,
                          choices=CAMERA_SOURCES)
    path: str = setting("", "dataset dir (default: Fashion-MNIST's), image folder (its test/ "
                        "split when it has one) or bag", read_only=True)
    backbone_path: str = setting("", "image_folder: the checkpoint whose model card names the "
                                 "classes in label order ('' = the class folders sorted by "
                                 "name)", read_only=True)
    split: str = setting("test", "Fashion-MNIST split", read_only=True, choices=("test", "train"))
    bag_topic: str = setting("", "Image topic inside the bag ('' = the first one)",
                             read_only=True)
    image_topic: str = setting(IMAGE_TOPIC, "topic the frames are published on",
                               read_only=True)
    loop: bool = setting(True, "start again after the last frame", read_only=True)
    wait_for_subscriber: bool = setting(True, "pause while nobody subscribes, so no replayed "
                                        "frame is lost to discovery")
    shuffle_seed: int = setting(-1, "seed of a shuffled order, -1 = source order (not for "
                                "bags)", range=(-1, 2**31 - 1), read_only=True)
    limit: int = setting(0, "publish only the first N frames (0 = all)", range=(0, 2**31 - 1),
                         read_only=True)
    frame_id: str = setting("camera", "header.frame_id prefix (label and seq follow)")
    rate_hz: float = setting(30.0, "frames per second", range=(0.1, 1000.0))
    width: int = setting(640, "output width, px (0 = from the aspect ratio / source)",
                         range=(0, MAX_SIDE))
    height: int = setting(480, "output height, px (0 = from the aspect ratio / source)",
                          range=(0, MAX_SIDE))
    encoding: str = setting("rgb8", "encoding of the published frames", choices=tuple(ENCODINGS))
    interpolation: str = setting("nearest", "upscaling", choices=INTERPOLATIONS)


@dataclass(frozen=True)
class ContextSettings:
    """context_node: read-only ones pick the source, the rest may change at run time."""

    source: str = setting("psutil", "where the context comes from", read_only=True,
                          choices=CONTEXT_SOURCES)
    rate_hz: float = setting(2.0, "ContextState messages per second", range=(0.1, 100.0))
    latency_budget_ms: float = setting(
        100.0, "the application's per-frame latency budget, ms (sources psutil and "
        "battery_state; a scenario sets its own)", range=(0.1, 60000.0))
    scenario: str = setting("scenarios/mixed.yaml", "scenario trace for source scenario: "
                            "relative to config/, or absolute", read_only=True)
    time_scale: float = setting(1.0, "scenario seconds per second (2 = twice as fast)",
                                range=(0.01, 100.0), read_only=True)
    loop: bool = setting(False, "restart the scenario at its end (else hold its last step)")
    start_time_unix: float = setting(
        0.0, "wall-clock time (s since 1970) of scenario t = 0, to line several processes up "
        "on one timeline (0 = node start; before it, t = 0 is held)", range=(0.0, 1e11),
        read_only=True)
    battery_topic: str = setting(BATTERY_TOPIC, "sensor_msgs/BatteryState topic for source "
                                 "battery_state", read_only=True)
    battery_timeout_s: float = setting(10.0, "a battery reading older than this counts as "
                                       "unknown, s", range=(0.1, 3600.0))


@dataclass(frozen=True)
class EvolutionNodeSettings:
    """evolution_node's own parameters, besides the policy's (EvolutionParams, BudgetParams,
    LambdaParams, ObjectiveParams)."""

    adaptive_lambdas: bool = setting(True, "move λ with the battery (LambdaParams rules); false "
                                     "= use lambda1 / lambda2 as given")
    lambda1: float = setting(0.7, "λ1 (accuracy) when adaptive_lambdas is false",
                             range=(0.0, 1.0))
    lambda2: float = setting(0.3, "λ2 (energy efficiency) when adaptive_lambdas is false",
                             range=(0.0, 1.0))
    profile_table: str = setting(
        "", "profile table JSON ('' = the shipped table of the engine: "
        "models/profile_table.json, or models/profile_table_torch.json for torch)",
        read_only=True)
    engine: str = setting(DEFAULT_ENGINE, "inference engine the perception node serves in; the "
                          "profile table must have been measured in it", read_only=True)
    decision_period_s: float = setting(0.2, "how often the policy is consulted besides on each "
                                       "context message, s", range=(0.01, 60.0))
    reconfigure_timeout_s: float = setting(3.0, "a Reconfigure call unanswered this long is "
                                           "reconciled, then retried, s",
                                           range=(0.05, 600.0))
    reconfigure_retries: int = setting(2, "retries of a Reconfigure call that got no answer",
                                       range=(0, 100))
    diagnostics_period_s: float = setting(1.0, "period of /diagnostics, s", range=(0.1, 60.0))
    stamp_tolerance_s: float = setting(
        10.0, "PerformanceMetrics stamped further than this from the node's clock (either way) "
        "are counted in metrics_rejected and ignored, s", range=(0.001, 86400.0))
    deadline_feedback: bool = setting(
        False, "also tell the policy about end-to-end deadline misses (perception's end-to-end "
        "p95 over the budget); it then swaps back and forth when no variant can meet the budget")


NODE_SETTINGS: dict[str, tuple[type, ...]] = {
    "perception_node": (PerceptionSettings,),
    "camera_replay_node": (CameraReplaySettings,),
    "context_node": (ContextSettings,),
    "evolution_node": (EvolutionParams, BudgetParams, LambdaParams, ObjectiveParams,
                       EvolutionNodeSettings),
}
