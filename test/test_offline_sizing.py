"""`adaspring size-backbone` (commands/size_backbone.py, core/offline/sizing.py): candidates,
the choice rule, and one tiny real run."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaspring_ros.commands.size_backbone import cli_main
from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR
from adaspring_ros.core.model.card import FASHION_MNIST_CARD
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.offline import sizing
from adaspring_ros.core.offline.sampling import sized_space


def row(latency: float, acc: float | None, macs: int = 1_000_000) -> sizing.Measured:
    c = sizing.Candidate((8, 16, 32), 3, 28)
    return sizing.Measured(c, latency, latency * 1.2, macs, 1000, acc)


def test_candidates_span_the_grid_and_refuse_what_the_space_lacks():
    cands = sizing.candidates([8, 16], [2, 3], [24, 28])
    assert len(cands) == 8 and len({c.id for c in cands}) == 8
    assert sizing.Candidate((16, 32, 64), 2, 24) in cands
    assert cands[0].full_config().id == "r24-w100d2ck100f-w100d2ck100f-w100d2ck100f"
    with pytest.raises(ValueError, match="depth 4"):
        sizing.candidates([8], [4], [28])
    with pytest.raises(ValueError, match="resolution 300"):
        sizing.candidates([8], [3], [300])
    with pytest.raises(ValueError, match="stem stride 3"):
        sizing.candidates([8], [3], [64], [3])
    with pytest.raises(ValueError, match=">= 4"):
        sizing.candidates([2], [3], [28])


def test_choice_is_the_fastest_within_tolerance_of_the_best_that_fits():
    rows = [row(1.0, 0.940), row(0.5, 0.938), row(0.3, 0.930), row(2.0, 0.950), row(0.1, None)]
    assert sizing.choose(rows, 0.3) is rows[3]  # 95.0 best; nothing else within 0.3 pt
    assert sizing.choose(rows, 0.3, latency_ms=1.5) is rows[1]  # 93.8 is 0.2 pt below 94.0
    assert sizing.choose(rows, 0.0, latency_ms=1.5) is rows[0]
    assert sizing.choose(rows, 0.3, max_mmacs=0.5) is None  # every MACs count is 1 M
    assert sizing.choose([row(0.1, None)], 0.3) is None  # untrained rows are never chosen


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 5.0), st.floats(0.5, 0.96)), min_size=1, max_size=12),
       st.floats(0.05, 5.0), st.floats(0.05, 5.0), st.floats(0.0, 2.0))
def test_a_tighter_latency_budget_never_picks_a_slower_backbone(points, b1, b2, tolerance):
    rows = [row(lat, acc) for lat, acc in points]
    loose, tight = max(b1, b2), min(b1, b2)
    a, b = sizing.choose(rows, tolerance, loose), sizing.choose(rows, tolerance, tight)
    if b is not None:
        assert a is not None and b.latency_ms_p50 <= a.latency_ms_p50


def test_sized_space_cuts_the_default_space():
    space = sized_space(2, 24)
    assert space.depths == (1, 2) and space.resolutions == (16, 20, 24)
    with pytest.raises(ValueError, match="max depth"):
        sized_space(4, 28)


def test_larger_inputs_get_a_spaced_ladder_or_the_sides_given():
    assert sized_space(3, 64).resolutions == (36, 44, 56, 64)
    assert sized_space(3, 224).resolutions == (128, 160, 192, 224)
    assert sized_space(3, 28, (48, 56, 64)).resolutions == (48, 56, 64)
    for sides, says in (((64, 48), "ascending"), ((48, 256), "224")):
        with pytest.raises(ValueError, match=says):
            sized_space(3, 28, sides)
    ids = {CompressionConfig.full(sized_space(3, 224)).id,
           CompressionConfig.smallest(sized_space(3, 224)).id}
    for config_id in ids:   # ids of large resolutions parse back in their space
        assert CompressionConfig.from_id(config_id, sized_space(3, 224)).id == config_id


def test_stem_strides_keep_the_first_stage_between_24_and_56_px():
    assert [sizing.stem_strides_for(r) for r in (24, 28, 48, 64, 96, 128, 224)] == [
        (1,), (1,), (1, 2), (2,), (2, 4), (4,), (4,)]
    cands = sizing.candidates([8], [2], [28, 96])
    assert [(c.resolution, c.stem_stride) for c in cands] == [(28, 1), (96, 2), (96, 4)]
    assert cands[0].id == "c8-16-32_d2_r28" and cands[2].id == "c8-16-32_d2_r96_s4"
    assert [c.stem_stride for c in sizing.candidates([8], [2], [96], [1])] == [1]


def test_colour_candidates_are_timed_with_three_channels_and_their_stride():
    card = dataclasses.replace(FASHION_MNIST_CARD, channels=3, channel_order="RGB",
                               mean=(0.5,) * 3, std=(0.25,) * 3, resolutions=(64,))
    rows = sizing.measure(sizing.candidates([4], [1], [64], [1, 2, 4]), "torch", 1, 3, card)
    macs = [m.macs for m in rows]
    assert macs[0] > macs[1] > macs[2] and all(m.latency_ms_p50 > 0 for m in rows)
    assert macs[0] > 4 * 64 * 64 * 3 * 9        # the stem alone reads 3 channels at 64 px


def test_bad_options_are_refused_with_exit_code_2(capsys):
    assert cli_main(["--latency-ms", "-1"]) == 2
    assert cli_main(["--depths", "5"]) == 2
    assert "not in the search space" in capsys.readouterr().err
    from adaspring_ros.commands.train import cli_main as train_main

    assert train_main(["--max-depth", "7"]) == 2


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_tiny_run_times_trains_and_reports(tmp_path, capsys):
    out = tmp_path / "size"
    code = cli_main(["--bases", "4,8", "--depths", "1", "--resolutions", "16",
                     "--epochs", "1", "--subset", "300", "--repeats", "5",
                     "--engine", "torch", "--latency-ms", "1000", "--out", str(out),
                     "--no-progress"])
    assert code == 0
    report = json.loads((out / "sizing.json").read_text())
    assert report["chosen"] in {"c4-8-16_d1_r16", "c8-16-32_d1_r16"}
    assert "--max-depth 1 --max-resolution 16" in report["train_command"]
    rows = {r["candidate"]: r for r in report["rows"]}
    assert rows["c4-8-16_d1_r16"]["macs"] < rows["c8-16-32_d1_r16"]["macs"]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 and math.isfinite(r["latency_ms_p50"])
               for r in rows.values())
    assert (out / "sizing.png").stat().st_size > 0
    assert not list(out.glob("work-*"))  # a finished candidate's training state is gone
    # each candidate's trained full network is kept, checksummed, to shrink the chosen one from
    kept = load_backbone(out / "c8-16-32_d1_r16_e1_s300.pt")
    assert kept.stage_channels == (8, 16, 32)
    assert (json.loads(kept.meta["args"])["fixed_config"]
            == sizing.Candidate((8, 16, 32), 1, 16).full_config().id)
    # an interrupted long run resumes: finished candidates are read back, not trained again,
    # and a line torn by the interruption is skipped
    with open(out / sizing.TRAINED_LOG, "a") as f:
        f.write('{"key": "c8-16-32_d1_r16_e1_s3')
    capsys.readouterr()
    assert cli_main(["--bases", "4,8", "--depths", "1", "--resolutions", "16",
                     "--epochs", "1", "--subset", "300", "--repeats", "5",
                     "--engine", "torch", "--latency-ms", "1000", "--out", str(out),
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "training " not in printed and printed.count("trained by an earlier run") == 2
    again = {r["candidate"]: r for r in json.loads((out / "sizing.json").read_text())["rows"]}
    assert all(again[k]["val_accuracy"] == rows[k]["val_accuracy"] for k in rows)
    # a budget no candidate meets: exit 1, the table still printed
    assert cli_main(["--bases", "4", "--depths", "1", "--resolutions", "16",
                     "--repeats", "5", "--engine", "torch", "--latency-ms", "0",
                     "--out", str(out), "--no-progress"]) == 1
    assert "no candidate meets the budgets" in capsys.readouterr().err


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_an_interrupted_candidate_resumes_from_its_last_epoch(tmp_path, capsys):
    c = sizing.Candidate((4, 8, 16), 1, 16)
    work = tmp_path / "work"
    acc1, cpu1 = sizing.short_train(c, 1, 300, 1, str(FASHION_MNIST_DIR), workdir=work)
    # a state saved after epoch 1, as an interruption leaves it: the rerun trains epoch 2 only
    acc2, cpu2 = sizing.short_train(c, 2, 300, 1, str(FASHION_MNIST_DIR), workdir=work)
    assert "after epoch 1" in capsys.readouterr().err
    assert 0.0 <= acc1 <= 1.0 and 0.0 <= acc2 <= 1.0
    assert cpu2 > cpu1 > 0.0  # CPU time counts both parts of the run
