"""Fuzzing (hypothesis) of the files a robot is given: scenario files, profile tables and weight
files (truncated, bytes flipped, wrong checksum, wrong shapes) at core/policy/scenario.py
ScenarioTrace.load, ProfileTable.load, checkpoint.load_backbone and the torch-free
checkpoint_reader.load_weight_bank: a clear error of the loader's own type naming the problem.
Needs no ROS.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fuzz_harness import _summary, fuzz, tried  # noqa: F401  (_summary prints the line)
from hypothesis import given
from hypothesis import strategies as st

SCENARIO = (Path(__file__).resolve().parent.parent / "config" / "scenarios" / "mixed.yaml")
YAML_VALUES = st.sampled_from([".nan", ".inf", "-.inf", "-1", "1e400", "null", "'x'", "[1, 2]",
                               "{a: 1}", "true", "101", "0", "-0.0", "1e-9", "]", "&a *a"])


def test_fuzzed_scenario_files_fail_naming_the_problem(tmp_path):
    from adaspring_ros.core.policy.scenario import ScenarioError, ScenarioTrace

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
    from adaspring_ros.core.model.profile_table import ProfileError, ProfileTable
    from tools.synthetic_tables import synthetic_table

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

    from adaspring_ros.core.model.checkpoint import save_backbone
    from adaspring_ros.core.model.supernet import build_backbone

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_backbone(build_backbone(stage_channels=(4, 8, 8)), path)
    return path


def test_fuzzed_weight_files_fail_naming_the_problem(tmp_path, tiny_checkpoint):
    from adaspring_ros.core.model.checkpoint import CheckpointError, load_backbone, write_checksum

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


def test_fuzzed_weight_files_fail_naming_the_problem_without_torch(tmp_path, tiny_checkpoint):
    """The torch-free reader a perception node serves from: damage anywhere in the zip, the
    pickle or a storage (checksum refreshed, so only parsing can tell) is a CheckpointError
    naming the file, or a bank whose every tensor has its expected shape."""
    from adaspring_ros.core.model.checkpoint_reader import load_weight_bank, write_checksum
    from adaspring_ros.core.model.weights import CheckpointError

    good = tiny_checkpoint.read_bytes()
    path = tmp_path / "fuzzed.pt"

    @fuzz(60)
    @given(cut=st.integers(0, len(good)), flips=st.lists(
        st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), max_size=6))
    def fuzz_weights(cut, flips):
        tried("load_weight_bank")
        path.write_bytes(damaged(good, cut, flips))
        write_checksum(path)
        try:
            bank = load_weight_bank(path)
        except CheckpointError as exc:
            assert "fuzzed.pt" in str(exc), exc
            return
        shapes = bank.arch.state_shapes()
        assert all(bank.state[name].shape == shape for name, shape in shapes.items())

    fuzz_weights()


def test_weight_files_with_wrong_shapes_name_the_tensor(tmp_path, tiny_checkpoint):
    import torch

    from adaspring_ros.core.model.checkpoint import CheckpointError, load_backbone, write_checksum

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
