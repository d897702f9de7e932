"""The perception process without ROS: frames classified and counted, swaps, reports (no ROS).

The node (test_ros_perception.py) only wires this to topics; here every counter and decision is
checked directly, and the whole path runs without torch (a subprocess proves it). A tiny colour
backbone of another space is served as its model card says, and a table or initial variant
that does not fit it is refused.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from colour_model import CARD, ROWS, SPACE, write_colour_model, write_lying_checkpoint

from adaspring_ros.core import paths
from adaspring_ros.core.data.transforms import preprocess_frame
from adaspring_ros.core.model import compact
from adaspring_ros.core.model.config import CompressionConfig, ConfigError
from adaspring_ros.core.model.engine import classify_logits, make_engine
from adaspring_ros.core.model.profile_table import ProfileError, ProfileTable
from adaspring_ros.core.serving.image_codec import ImageError
from adaspring_ros.core.serving.perception import (
    Perception,
    RejectedFrame,
    invalid_parameters,
)

ROOT = Path(__file__).resolve().parent.parent
SMALL = CompressionConfig.from_id("r20-w50d1ck100f-w50d1ck100f-w50d1ck100f")
PARAMS = {"backbone_path": "", "engine": "onnxruntime", "profile_table": "",
          "initial_config": "full", "num_threads": 1, "max_cached_variants": 2,
          "device_power_profile": "cloud_x86_vcpu", "timing_log": "", "max_rate_hz": 0.0,
          "debug_image_rate_hz": 2.0, "stamp_tolerance_s": 10.0}


@pytest.fixture(scope="module")
def perception(tmp_path_factory):
    if not paths.default_backbone().is_file():
        pytest.skip("no shipped backbone in this checkout")
    log = tmp_path_factory.mktemp("perception") / "timing.csv"
    served = Perception({**PARAMS, "timing_log": str(log)})
    served.start_window()
    served.log_path = log
    yield served
    served.close()


def _frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _serve(perception: Perception, pixels: np.ndarray, stamp_ns: int | None = 1):
    frame = perception.receive(None)
    result = perception.classify(frame, lambda channels: pixels)
    with perception.publishing(frame):
        pass
    e2e = perception.finish(frame, result, 1, stamp_ns, 2_000_001 if stamp_ns else 0)
    return result, e2e


def test_a_frame_is_classified_by_the_served_variant(perception):
    pixels = _frame()
    result, e2e_ms = _serve(perception, pixels)
    config, _ = perception.server.active
    weights = compact.materialise(perception.bank, config)
    offline = classify_logits(make_engine("onnxruntime").prepare(weights)(
        preprocess_frame(pixels, config.resolution)))
    assert (result.class_id, result.config) == (offline[0], config)
    assert result.score == pytest.approx(offline[1], abs=1e-5)
    assert result.label == perception.bank.classes[result.class_id]
    assert result.forward_ms > 0 and result.preprocess_ms >= 0 and e2e_ms == 2.0
    assert perception.model_info.backbone_sha256 == perception.bank.sha256
    assert perception.model_info.engine.name == "onnxruntime"


def test_bad_input_is_rejected_and_failures_are_counted(perception):
    before = dict(perception.stats.counts)

    asked = []

    def bad(channels: int) -> np.ndarray:
        asked.append(channels)
        raise ImageError("unsupported encoding 'nv12'")

    with pytest.raises(RejectedFrame, match="nv12"):
        perception.classify(perception.receive(None), bad)
    assert asked == [1]  # the decoder is told the model's input channels (a grey backbone)
    assert perception.report(0)[1].values["last_rejection"] == "unsupported encoding 'nv12'"
    with pytest.raises(RejectedFrame, match="uint8"):
        perception.classify(perception.receive(None),
                            lambda channels: np.zeros((4, 4), np.float32))
    assert "uint8" in perception.report(0)[1].values["last_rejection"]

    def broken(channels: int) -> np.ndarray:
        raise MemoryError("no room")

    with pytest.raises(MemoryError):
        perception.classify(perception.receive(None), broken)
    frame = perception.receive(None)
    perception.classify(frame, lambda channels: _frame())
    with pytest.raises(RuntimeError):
        with perception.publishing(frame):
            raise RuntimeError("publisher gone")
    counts = perception.stats.counts
    assert counts["frames_rejected"] - before.get("frames_rejected", 0) == 2
    assert counts["frame_errors"] - before.get("frame_errors", 0) == 2
    assert counts["frames_received"] - before.get("frames_received", 0) == 4
    assert counts["frames_processed"] == before.get("frames_processed", 0)


def test_a_rate_cap_skips_frames_and_counts_them(perception):
    perception.apply({"max_rate_hz": 0.001})
    try:
        before = perception.stats.counts.get("frames_skipped", 0)
        admitted = [perception.receive(None) is not None for _ in range(5)]
        assert admitted == [True, False, False, False, False]
        assert perception.stats.counts["frames_skipped"] - before == 4
    finally:
        perception.apply({"max_rate_hz": 0.0})


def test_swaps_and_refused_requests(perception):
    outcome = perception.reconfigure(lambda space: SMALL)
    assert outcome.success and outcome.swapped and outcome.active == SMALL
    assert "swapped, built" in outcome.message and outcome.swap_ms > 0
    assert _serve(perception, _frame(1))[0].config == SMALL
    again = perception.reconfigure(lambda space: SMALL)
    assert again.success and not again.swapped and "already serving, cached" in again.message

    def invalid(space):
        raise ConfigError("width=0.3 is not one of")

    refused = perception.reconfigure(invalid)
    assert not refused.success and refused.active == SMALL and refused.level == "warning"
    assert math.isnan(refused.swap_ms) and "still serving " + SMALL.id in refused.message
    full = CompressionConfig.full()
    perception.server.cache.clear()
    build, perception.server.cache.build = perception.server.cache.build, _no_room
    try:
        failed = perception.reconfigure(lambda space: full)
    finally:
        perception.server.cache.build = build
    assert not failed.success and failed.level == "error" and "no room" in failed.message
    assert perception.server.active[0] == SMALL
    assert perception.stats.counts["reconfigure_rejected"] >= 2
    assert perception.reconfigure(lambda space: full).swapped


def _no_room(config):
    raise MemoryError("no room")


def test_a_report_closes_the_window_and_says_how_the_node_is(perception):
    perception.report(0)                                    # a fresh window
    values, health = perception.report(3)
    assert health.warn and health.message == "no frames classified"
    assert values["fps"] == 0.0 and health.values["callback_errors"] == 3
    for seed in range(3):
        _serve(perception, _frame(seed))
    perception.stats.add("frames_dropped", 10)              # most frames never arrived
    values, health = perception.report(0)
    assert values["frames_processed"] >= 3 and math.isfinite(values["model_latency_ms_p50"])
    assert values["config_id"] == perception.server.active[0].id
    assert health.warn and "10 of 13 frames were dropped" in health.message
    _serve(perception, _frame(4))
    values, health = perception.report(0)
    assert not health.warn and health.message == f"serving {values['config_id']}"
    assert health.values["backbone_sha256"] == perception.bank.sha256


def test_stamps_left_out_of_the_latency_and_the_timing_log(perception):
    before = perception.stats.counts.get("stamps_rejected", 0)
    perception.stamp_rejected()
    _, e2e = _serve(perception, _frame(5), stamp_ns=None)
    assert math.isnan(e2e) and perception.stats.counts["stamps_rejected"] == before + 1
    perception.timing_log._file.flush()
    lines = perception.log_path.read_text().splitlines()
    assert lines[0].startswith("stamp_ns,callback_ms,forward_ms") and len(lines) > 3


def test_the_debug_view_is_rate_capped(perception):
    result, e2e = _serve(perception, _frame(6))
    perception.apply({"debug_image_rate_hz": 0.1})
    view = perception.debug_view(result, e2e)
    assert view is not None and view.ndim == 3 and view.shape[2] == 3
    assert perception.debug_view(result, e2e) is None


def test_invalid_parameters_name_the_parameter():
    assert invalid_parameters({"initial_config": "smallest", "max_rate_hz": 1.0}) == ""
    assert invalid_parameters({"device_power_profile": "/nonexistent.yaml"}).startswith(
        "device_power_profile:")


# -- a colour backbone of another space -----------------------------------------------------------
@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    return write_colour_model(tmp_path_factory.mktemp("colour"))


def _colour_params(colour, **changes) -> dict:
    backbone, table = colour
    return {**PARAMS, "backbone_path": str(backbone), "profile_table": str(table), **changes}


def test_a_colour_model_of_another_space_is_served_as_its_card_says(colour):
    smallest = CompressionConfig.smallest(SPACE)
    served = Perception(_colour_params(colour, initial_config=smallest.id))
    try:
        assert served.space == SPACE and served.server.active[0] == smallest
        assert served.model_info.class_names == CARD.classes
        for pixels in (_frame(7), _frame(8)[..., 0]):   # a colour and a grey frame
            result, _ = _serve(served, pixels)
            config, runner = served.server.active
            x = preprocess_frame(pixels, config.resolution, CARD)
            assert x.shape == (1, 3, config.resolution, config.resolution)
            assert result.class_id == classify_logits(runner(x))[0]
            assert result.label == CARD.classes[result.class_id]
        mid = CompressionConfig.from_id(
            ProfileTable.load(colour[1]).entries[2].id, SPACE)
        outcome = served.reconfigure(lambda space: CompressionConfig.from_id(mid.id, space))
        assert outcome.success and outcome.active == mid
    finally:
        served.close()


@pytest.mark.parametrize("initial", ["toaster", CompressionConfig.full().id])
def test_initial_config_is_checked_against_the_checkpoints_space(colour, initial):
    with pytest.raises(ConfigError, match="^initial_config: "):
        Perception(_colour_params(colour, initial_config=initial))


def test_a_checkpoint_whose_card_contradicts_its_weights_is_refused(colour, tmp_path):
    lying = write_lying_checkpoint(colour[0], tmp_path / "lying.pt")
    with pytest.raises(ValueError, match="contradicts the weights: the card says 1 input "
                                         "channel.*stem's weights take 3"):
        Perception(_colour_params(colour, backbone_path=str(lying)))


def test_a_table_of_another_card_or_space_is_refused_naming_both(colour, tmp_path):
    from tools.synthetic_tables import table_from_rows

    grey = tmp_path / "grey_card.json"
    table_from_rows(ROWS, SPACE).save(grey)           # the legacy grey card, same space
    with pytest.raises(ProfileError, match="another model card.*channels: table 1, backbone 3"):
        Perception(_colour_params(colour, profile_table=str(grey)))
    other = tmp_path / "other_space.json"
    table_from_rows(ROWS, replace(SPACE, widths=(0.25, 1.0)), card=CARD).save(other)
    with pytest.raises(ProfileError, match=f"^{other}: .*space"):
        Perception(_colour_params(colour, profile_table=str(other)))


def test_serving_frames_and_swaps_loads_no_torch():
    if not paths.default_backbone().is_file():
        pytest.skip("no shipped backbone in this checkout")
    code = f"""
import sys
import numpy as np
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.serving.perception import Perception
p = Perception({PARAMS!r})
for config in ("full", "r24-w50d2sk50q-w75d2ck100f-w50d1sk50q", "smallest"):
    p.reconfigure(lambda space: CompressionConfig.from_id(config, space)
                  if config != "full" else CompressionConfig.full(space))
    frame = p.receive(None)
    p.classify(frame, lambda channels: np.zeros((480, 640, 3), np.uint8))
print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"
