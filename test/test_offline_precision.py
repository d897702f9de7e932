"""Device and precision of training: what ``--device`` and ``--amp`` resolve to, what is
refused, and that every saved tensor is on the CPU (precision.py)."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from synthetic_idx import write_idx_dataset

from adaspring_ros.commands.train import cli_main
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.offline.precision import (
    Precision,
    resolve_amp,
    resolve_device,
    to_cpu,
)

CUDA = torch.cuda.is_available()


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    return []


def test_auto_is_cuda_when_available_and_the_cpu_stays_float32():
    assert resolve_device("auto") == torch.device("cuda:0" if CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_amp("auto", torch.device("cpu")) == "off"
    assert resolve_amp("auto", torch.device("cuda", 0)) == "bf16"
    assert resolve_amp("fp16", torch.device("cuda", 0)) == "fp16"
    for amp in ("bf16", "fp16"):
        with pytest.raises(ValueError, match="float32"):
            resolve_amp(amp, torch.device("cpu"))
    with pytest.raises(ValueError, match="one of"):
        resolve_amp("fp8", torch.device("cpu"))
    # off: no autocast at all, the CPU path is untouched
    assert isinstance(Precision(torch.device("cpu")).autocast(), contextlib.nullcontext)
    assert Precision(torch.device("cpu")).scaler is None


def test_devices_this_machine_lacks_are_refused():
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("meta")
    with pytest.raises(ValueError):
        resolve_device("warp-drive")
    if not CUDA:
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    else:
        with pytest.raises(ValueError, match="LOCAL_RANK"):
            resolve_device("cuda:0", local_rank=1)


def test_to_cpu_walks_containers_and_leaves_cpu_tensors_as_they_are():
    t = torch.ones(3)
    tree = {"a": [t, (t, 2)], "b": "x"}
    out = to_cpu(tree)
    assert out["a"][0] is t and out["a"][1][0] is t and out["a"][1][1] == 2 and out["b"] == "x"
    assert isinstance(out["a"][1], tuple)


@pytest.mark.parametrize("option, says", [
    (["--amp", "bf16"], "float32"), (["--device", "quantum"], "--device"),
    (["--workers", "-2"], "--workers")])
def test_the_command_refuses_before_any_work(option, says, tmp_path, capsys):
    out = tmp_path / "never.pt"
    assert cli_main(["--device", "cpu", *option, "--out", str(out)]) == 2
    assert says in capsys.readouterr().err and not out.exists()


def test_a_batch_that_does_not_split_over_torchruns_processes_is_refused(monkeypatch,
                                                                          tmp_path, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    out = tmp_path / "never.pt"
    assert cli_main(["--device", "cpu", "--batch-size", "64", "--out", str(out)]) == 2
    assert "multiple" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("device, amp", [
    ("cpu", "off"),
    pytest.param("cuda", "bf16", marks=pytest.mark.skipif(not CUDA, reason="no CUDA GPU")),
    pytest.param("cuda", "fp16", marks=pytest.mark.skipif(not CUDA, reason="no CUDA GPU"))])
def test_saved_files_hold_cpu_tensors_whatever_the_device(device, amp, tmp_path):
    """A backbone trained on a GPU loads on a robot without one: the backbone file and the
    resumable state (weights, optimizer, scaler) hold CPU tensors only."""
    data = write_idx_dataset(tmp_path / "idx", n=200)
    out, work = tmp_path / "bb.pt", tmp_path / "w"
    assert cli_main(["--subset", "64", "--batch-size", "32", "--channels", "4,8,8",
                     "--epochs", "1", "--warmup-epochs", "0", "--val-size", "100",
                     "--threads", "1", "--no-progress", "--device", device, "--amp", amp,
                     "--data", str(data), "--out", str(out), "--workdir", str(work)]) == 0
    for path in (out, work / "last.pt"):
        tensors = _tensors(torch.load(path, map_location=None, weights_only=True))
        assert tensors and {t.device.type for t in tensors} == {"cpu"}, path
    model = load_backbone(out)
    args = json.loads(model.meta["args"])
    assert args["device"] == ("cuda:0" if device == "cuda" else "cpu") and args["amp"] == amp
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
