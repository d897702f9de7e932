"""Where a subnet's gap to the same net trained alone lives: in its own BN, or in the shared convs.

For the subnets of ``bench_backbone`` (half width, subnet A, subnet B), the validation top-1 of
the variant as the shipped backbone serves it (shared convolutions, its own tuned BN scale/shift
where ``tune-variants`` kept one), then of a **private copy** of all its weights fine-tuned
alone from there for ``--epochs`` on every training image: half labels, half the full network's
soft outputs (KL), SGD with momentum and a cosine schedule. The copy is a separate net, which
the catalogue does not ship; it measures how much a variant gains when its convolutions need not
serve every other variant, against what its own BN scale/shift bought (``variant-tuning``
section). Validation only (the 5 000 held-out training images); torch, float.
Writes the ``private-copy`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_private_copy --epochs 4
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

from adaspring_ros.core.data.datasets import load_fashion_mnist
from adaspring_ros.core.data.transforms import preprocess_tensor
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.offline.evaluate import evaluate
from adaspring_ros.core.offline.losses import distillation_loss
from adaspring_ros.core.offline.optim import lr_at
from adaspring_ros.core.offline.tuning import teacher_logits, tuning_split
from adaspring_ros.core.paths import default_backbone
from bench.bench_variant_tuning import BENCH_SUBNETS
from bench.report import markdown_table, write_section


def fine_tune_copy(net: torch.nn.Module, images, labels, teacher: torch.Tensor, resolution: int,
                   epochs: int, lr: float, label_weight: float, batch_size: int = 256,
                   seed: int = 0) -> None:
    """Train every weight of the compact ``net`` in place (half labels, half KL by default)."""
    gen = torch.Generator().manual_seed(seed)
    x, y = preprocess_tensor(images, resolution), torch.from_numpy(labels).long()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True)
    steps = math.ceil(len(x) / batch_size)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch * steps + i, epochs * steps, lr)
            idx = order[i * batch_size:(i + 1) * batch_size]
            out = net(x[idx])
            loss = (label_weight * F.cross_entropy(out, y[idx])
                    + (1 - label_weight) * distillation_loss(out, teacher[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # the copy has no BN left (folded at materialise): clipping keeps a deep one stable
            torch.nn.utils.clip_grad_norm_(net.parameters(), 2.0)
            optimizer.step()
    net.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=4, help="epochs of each private fine-tune")
    p.add_argument("--lr", default="0.005,0.02",
                   help="comma-separated learning rates: one fine-tune per rate and subnet")
    p.add_argument("--label-weight", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    try:
        lrs = [float(x) for x in args.lr.split(",") if x]
    except ValueError:
        lrs = []
    if args.epochs < 1 or not 0 <= args.label_weight <= 1 or not lrs or min(lrs) <= 0:
        p.error("--epochs >= 1, --lr: positive rates separated by commas, --label-weight in "
                "[0, 1]")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = load_backbone(default_backbone())
    train = load_fashion_mnist("train")
    train_idx, val_idx = tuning_split(len(train), 0)
    val = train.subset(val_idx)
    images, labels = train.images[train_idx], train.labels[train_idx]
    full = CompressionConfig.full(model.space)
    teacher = teacher_logits(model, images, full)

    rows = []
    for config_id, name in BENCH_SUBNETS.items():
        config = CompressionConfig.from_id(config_id, model.space)
        served = 100 * evaluate(model.materialise(config).eval(), val, config.resolution)
        private, cpu = [], 0.0
        for lr in lrs:
            net = model.materialise(config)
            cpu0 = time.process_time()
            fine_tune_copy(net, images, labels, teacher, config.resolution, args.epochs, lr,
                           args.label_weight)
            private.append(100 * evaluate(net, val, config.resolution))
            cpu += time.process_time() - cpu0
            print(json.dumps({"variant": config_id, "lr": lr, "served": served,
                              "private": private[-1]}), flush=True)
        n_params = sum(t.numel() for t in net.parameters())
        tuned = "yes" if config_id in model.variant_affine else "no"
        rows.append([name, config_id, tuned, f"{served:.2f}", *(f"{a:.2f}" for a in private),
                     f"{max(private) - served:+.2f}", f"{n_params * 4 / 1024:.0f}",
                     f"{cpu / 60 / len(lrs):.1f}"])

    body = [
        markdown_table(["subnet", "config", "own BN tuned", "val served %",
                        *(f"val private copy, lr {lr:g} %" for lr in lrs), "best gain",
                        "copy KB", "CPU min per fine-tune"], rows),
        "",
        f"- Served: `models/backbone.pt` (`{model.sha256[:12]}`) as the perception node "
        "materialises it (shared convolutions; the variant's own BN scale/shift where tuned).",
        f"- Private copy: that same compact net, every weight trained alone from there for "
        f"{args.epochs} epochs on the {len(images)} training images, {args.label_weight:g} "
        f"labels + {1 - args.label_weight:g} KL to the full network, SGD at each rate "
        "(momentum 0.9, cosine, gradients clipped to norm 2), batch 256, seed 0. Not "
        "something the catalogue ships: it locates the gap.",
        "- Validation: the 5 000 held-out training images; one seed (~0.3 pt of noise).",
    ]
    write_section("private-copy", "A subnet's own weights vs the shared ones (validation split)",
                  f".venv/bin/python -m bench.bench_private_copy --epochs {args.epochs} "
                  f"--lr {args.lr}",
                  "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
