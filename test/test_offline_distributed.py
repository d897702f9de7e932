"""DistributedDataParallel training on the CPU (gloo, 2 processes): one step of 2 ranks x half
batch against one process, and a real ``torchrun --nproc-per-node 2`` run (no ROS, ~30 s).

BN is what makes "2 x half batch" differ from "1 x whole batch": in training mode each rank
normalises with its own half's statistics (as DistributedDataParallel does without SyncBN), so
the two are compared in two ways that are each exact up to float rounding:

* with BN on its running statistics (a per-image function), 2 ranks x half batch give the
  weights one process gets from the whole batch: this checks the sharding of the order, the
  augmentation, the identical variants on every rank, the gradient averaging and the step;
* with BN on batch statistics, as the recipe trains, 2 ranks give the mean of what each rank's
  half gives alone, for the weights (one SGD step from zero momentum is affine in the
  gradient) and for the BN running statistics (averaged over the ranks after the epoch).

Tolerance: every tensor within 0.1 % of the largest change the step made to it, plus 1e-7
(float32 rounding of weights of magnitude ~0.5): the two sides sum the same float32 terms in
another order (measured: at most 0.02 % of the step). A single image trained differently out
of 64 moves a tensor by ~1.5 % of the step.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from synthetic_idx import write_idx_dataset
from torch import nn

from adaspring_ros.commands.train import build_parser, cli_main, recipe_from
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.model.operators import SwitchableBatchNorm2d
from adaspring_ros.core.offline.distributed import Ranks
from adaspring_ros.core.offline.train import train

ROOT = Path(__file__).resolve().parent.parent
REL, ULP = 1e-3, 1e-7
# One sandwich step (largest + smallest + 3 random students, in-place distillation on clean
# images) of a global batch of 64 that is the whole training set.
STEP = ["--subset", "64", "--batch-size", "64", "--epochs", "1", "--warmup-epochs", "0",
        "--channels", "4,8,8", "--val-size", "100", "--threads", "1", "--no-progress",
        "--augment-largest-only", "--student-label-weight", "0.5"]


def _recipe(argv: list[str]):
    return recipe_from(build_parser().parse_args(argv))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bn_on_running_stats(self: nn.Module, mode: bool = True) -> nn.Module:
    """SwitchableBatchNorm2d.train that keeps the module in eval mode: BN normalises with its
    running statistics (a per-image function) and never updates them."""
    return nn.Module.train(self, False)


def _rank(rank: int, runs: list[tuple[list[str], bool, int]]) -> None:
    """One process of the 2-rank group: torchrun's environment, then the command itself, once
    per run (each with a rendezvous port of its own)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    for argv, running_stats, port in runs:
        os.environ["MASTER_PORT"] = str(port)
        original = SwitchableBatchNorm2d.train
        if running_stats:
            SwitchableBatchNorm2d.train = _bn_on_running_stats
        try:
            assert cli_main(argv) == 0
        finally:
            SwitchableBatchNorm2d.train = original


def _assert_same_step(a: dict, b: dict, before: dict, what: str) -> None:
    """``a`` and ``b``, both one step from ``before``, took the same step: every tensor within
    ``REL`` of the largest change the step made to it (+ ``ULP`` for the rounding of the
    weights themselves); integer buffers (BN batch counters) equal."""
    assert a.keys() == b.keys() == before.keys()
    for name in a:
        if not a[name].is_floating_point():
            assert torch.equal(a[name], b[name]), f"{what}: {name}"
            continue
        step = (b[name] - before[name]).abs().max().item()
        off = (a[name] - b[name]).abs().max().item()
        assert off <= REL * step + ULP, f"{what}: {name} off by {off:.3g}, step {step:.3g}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("idx"))


def test_two_ranks_step_like_one_process(data, tmp_path, monkeypatch):
    common = STEP + ["--data", str(data)]
    frozen_bn, batch_bn = tmp_path / "ddp_running.pt", tmp_path / "ddp_batch.pt"
    runs = [(common + ["--out", str(frozen_bn), "--workdir", str(tmp_path / "w1")], True,
             _free_port()),
            (common + ["--out", str(batch_bn), "--workdir", str(tmp_path / "w2")], False,
             _free_port())]
    mp.spawn(_rank, args=(runs,), nprocs=2, join=True)
    before = train(_recipe(common + ["--lr", "0", "--out", str(tmp_path / "w0.pt"),
                                     "--workdir", str(tmp_path / "w0")])).state_dict()

    # BN on running statistics: 2 ranks x 32 images == 1 process x 64 images
    with monkeypatch.context() as m:
        m.setattr(SwitchableBatchNorm2d, "train", _bn_on_running_stats)
        whole = train(_recipe(common + ["--out", str(tmp_path / "one.pt"),
                                        "--workdir", str(tmp_path / "w3")]))
    ddp = load_backbone(frozen_bn)
    _assert_same_step(ddp.state_dict(), whole.state_dict(), before, "2 ranks vs whole batch")
    moved = max((ddp.state_dict()[k] - before[k]).abs().max().item()
                for k in before if before[k].is_floating_point())
    assert moved > 1e-3                            # the step did move the weights

    # BN on batch statistics: 2 ranks == the mean of each rank's half computed alone
    halves = [train(_recipe(common + ["--out", str(tmp_path / f"half{r}.pt"),
                                      "--workdir", str(tmp_path / f"h{r}")]),
                    Ranks(r, 2)).state_dict() for r in (0, 1)]
    mean = {k: (halves[0][k] + halves[1][k]) / 2 if halves[0][k].is_floating_point()
            else halves[0][k] for k in halves[0]}
    _assert_same_step(load_backbone(batch_bn).state_dict(), mean, before,
                      "2 ranks vs their halves")
    # ... and the halves really differ (each rank saw other images)
    assert any(not torch.allclose(halves[0][k], halves[1][k]) for k in halves[0]
               if halves[0][k].is_floating_point())
    assert json.loads(ddp.meta["args"])["device"] == "cpu" and ddp.meta["world_size"] == 2


def test_torchrun_two_processes_write_one_checkpoint_and_resume_alone(data, tmp_path):
    out, work = tmp_path / "out" / "bb.pt", tmp_path / "work"
    common = ["--subset", "96", "--batch-size", "32", "--channels", "4,8,8", "--val-size", "100",
              "--threads", "1", "--data", str(data), "--out", str(out), "--workdir", str(work)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(_free_port()), "-m", "adaspring_ros.cli", "train", "--epochs", "1",
         "--warmup-epochs", "0"] + common + ["--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # rank 0 alone logs and writes: one record per epoch, one backbone, one resumable state
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["epoch"] for r in records] == [1]
    assert sorted(p.name for p in out.parent.iterdir()) == ["bb.pt", "bb.pt.sha256"]
    assert sorted(p.name for p in work.iterdir()) == ["last.pt"]
    model = load_backbone(out)
    assert model.meta["world_size"] == 2
    # what was saved is on the CPU, optimizer state included (a GPU run's would be too)
    state = torch.load(work / "last.pt", weights_only=True)
    tensors = [*state["backbone"]["state_dict"].values(),
               *(t for s in state["optimizer"]["state"].values() for t in s.values()
                 if isinstance(t, torch.Tensor))]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    # one process takes over where two stopped
    assert cli_main(["--epochs", "2", "--warmup-epochs", "0", "--resume", "--no-progress"]
                    + common) == 0
    resumed = load_backbone(out)
    assert [h["epoch"] for h in json.loads(resumed.meta["history"])] == [1, 2]
    assert resumed.meta["world_size"] == 1
