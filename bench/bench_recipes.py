"""Training recipes side by side: which sandwich recipe gives the best variants per epoch.

Each recipe trains a backbone from scratch with ``adaspring train`` for ``--epochs`` (short
runs, cached in runs/recipes/ and resumable), then a fixed panel of variants — the full backbone,
the benchmark's hand-crafted and alone-trained subnets, the ~4x-faster candidates of the profile
table, a mixed-width variant and the smallest — is evaluated on the validation hold-out of the
train split (never the test split: this chooses a recipe), each variant with its own exact BN
statistics. Prints a table and writes the ``recipes`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_recipes --epochs 4

With ``--backbones name=path,...`` it trains nothing and compares backbones already trained (full
length runs, e.g. a candidate against the shipped one) on the same panel, into the
``recipes-backbones`` section; with ``--operator-twins OP`` as well (an operator stage), into
the ``recipes-operator`` section. ``--alone PATH,...`` (nets trained alone, ``adaspring train
--fixed-config``) adds their validation top-1 in a column of its own and each backbone's mean gap
to them: the cost of sharing the weights, measured where recipes are chosen.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from adaspring_ros.cli import main as adaspring
from adaspring_ros.core.data.datasets import load_fashion_mnist, train_val_split
from adaspring_ros.core.model.bn_stats import variant_bn_stats
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig
from adaspring_ros.core.model.supernet import ElasticBackbone
from adaspring_ros.core.offline.evaluate import evaluate
from adaspring_ros.core.offline.profiler import bn_calibration_images
from adaspring_ros.core.offline.recipe import epochs_trained, trained_alone
from adaspring_ros.core.offline.sampling import student_pool, with_operator
from bench.report import markdown_table, write_section

# the shipped first stage: labels + BigNAS's augmentation on the largest only, zero-init
LARGEST_ONLY = ["--student-label-weight", "0.5", "--augment-largest-only", "--zero-init-residual"]
RECIPES = {
    "shipped": [],                                        # the recipe of models/backbone.pt
    "uniform": ["--uniform-subnets", "0.5"],              # half the students stage-uniform
    "labels": ["--student-label-weight", "0.5"],          # students: half labels, half teacher
    "largest-only": LARGEST_ONLY,
    # the same with the summed gradient clipped near its 90th percentile (logged by train)
    "largest-only-clip2": [*LARGEST_ONLY, "--clip-grad", "2"],
}
FIRST_RECIPES = ("shipped", "uniform", "labels")     # the default: the first comparison's three
PANEL = (
    "r28-w100d3ck100f-w100d3ck100f-w100d3ck100f",   # full
    "r28-w75d3ck100f-w100d2ck100f-w100d2ck100f",    # fastest within 1.5 pt (shipped table)
    "r28-w50d3ck100f-w50d3ck100f-w50d3ck100f",      # hand-crafted half width
    "r28-w50d2ck100f-w50d2ck100f-w50d2ck100f",      # ~4x faster than full
    "r24-w50d2ck100f-w50d2ck100f-w50d2ck100f",      # ~5x
    "r24-w75d1ck100f-w75d2ck100f-w75d2ck100f",      # ~3.6x
    "r20-w50d1ck100f-w50d1ck100f-w50d1ck100f",      # subnet A of bench_backbone
    "r24-w50d2sk100f-w50d2sk100f-w50d2sk100f",      # subnet B of bench_backbone
    "r24-w75d2ck100f-w50d2ck100f-w25d2ck100f",      # mixed widths
    "r16-w25d1ck100f-w25d1ck100f-w25d1ck100f",      # smallest
)
RUNS = Path(__file__).resolve().parent.parent / "runs" / "recipes"


def train_recipe(name: str, epochs: int, subset: int) -> Path:
    """The backbone of one recipe (trained here unless cached)."""
    tag = f"{name}-e{epochs}" + (f"-s{subset}" if subset else "")
    out = RUNS / f"{tag}.pt"
    if not out.exists():
        args = ["--epochs", str(epochs), "--out", str(out), "--workdir", str(RUNS / f"work-{tag}"),
                "--resume", "--no-progress", "--subset", str(subset), *RECIPES[name]]
        if adaspring(["train", *args]) != 0:
            raise RuntimeError(f"training recipe {name} failed")
    return out


def panel_accuracy(model: ElasticBackbone, val, bn_images, panel: list[str]) -> dict[str, float]:
    """Validation top-1 (%) of every panel variant, each with its own exact BN statistics and
    the shared BN scale/shift: per-variant tuning (``tune-variants``) is a later step that
    applies to any backbone, so a tuned bank in the file is left out of a recipe comparison."""
    model.variant_affine.clear()
    out = {}
    for config_id in panel:
        config = CompressionConfig.from_id(config_id, DEFAULT_SPACE)
        model.variant_bn[config_id] = variant_bn_stats(model, config, bn_images)
        net = model.materialise(config).eval()
        out[config_id] = 100.0 * evaluate(net, val, config.resolution)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=4, help="epochs of each recipe (1 warm-up)")
    p.add_argument("--recipes", default=",".join(FIRST_RECIPES),
                   help=f"comma-separated names of {sorted(RECIPES)}")
    p.add_argument("--bn-images", type=int, default=2000)
    p.add_argument("--backbones", default="",
                   help="name=path,...: compare these trained backbones instead of training")
    p.add_argument("--front-of", default="", metavar="TABLE",
                   help="also evaluate the Pareto front of this profile table (full-rank float "
                        "forms): the variants the search can pick")
    p.add_argument("--operator-twins", default="", metavar="OP",
                   help="also evaluate that front with OP in every stage (what `adaspring train "
                        "--only-operator OP` trains)")
    p.add_argument("--alone", default="", metavar="PATH,...",
                   help="nets trained alone (`adaspring train --fixed-config`): each one's "
                        "validation top-1 beside the shared backbones', and the gap")
    p.add_argument("--section", default="", metavar="NAME",
                   help="write into this section of docs/benchmarks.md instead of the default "
                        "one (a further round, kept beside the one it continues)")
    p.add_argument("--title", default="", help="that section's title")
    p.add_argument("--subset", type=int, default=0, help=argparse.SUPPRESS)   # smoke runs
    args = p.parse_args(argv)
    front: list[str] = []
    if args.front_of:
        if not Path(args.front_of).is_file():
            p.error(f"no such profile table: {args.front_of}")
        front = [c.id for c in student_pool(DEFAULT_SPACE, [], args.front_of)]
    twins: list[str] = []
    if args.operator_twins:
        if not front or args.operator_twins not in DEFAULT_SPACE.operators:
            p.error(f"--operator-twins needs --front-of and one of {DEFAULT_SPACE.operators}")
        twins = list(dict.fromkeys(
            with_operator(CompressionConfig.from_id(cid), args.operator_twins).id
            for cid in front))
    alone_nets: dict[str, ElasticBackbone] = {}
    for path in filter(None, args.alone.split(",")):
        if not Path(path).is_file():
            p.error(f"no such net trained alone: {path}")
        net = load_backbone(path)
        config_id = trained_alone(net.meta)
        if config_id is None:
            p.error(f"{path} was not trained alone (no --fixed-config in its file)")
        alone_nets[config_id] = net
    panel = list(dict.fromkeys([*PANEL, *alone_nets, *front, *twins]))
    if args.backbones:
        try:
            given = dict(pair.split("=", 1) for pair in args.backbones.split(",") if pair)
        except ValueError:
            p.error("--backbones wants name=path pairs separated by commas")
        missing = [path for path in given.values() if not Path(path).is_file()]
        if missing:
            p.error(f"no such backbone file(s): {missing}")
        names = list(given)
    else:
        names = [n for n in args.recipes.split(",") if n]
        unknown = sorted(set(names) - set(RECIPES))
        if unknown:
            p.error(f"unknown recipe(s) {unknown}; have {sorted(RECIPES)}")

    full_train = load_fashion_mnist("train")
    _, val_idx = train_val_split(len(full_train), 5000, seed=0)   # training's hold-out
    val = full_train.subset(val_idx[:max(100, args.subset // 10)] if args.subset else val_idx)
    bn_images = bn_calibration_images(args.bn_images)
    results, cpu, about = {}, {}, {}
    for name in names:
        path = Path(given[name]) if args.backbones else train_recipe(name, args.epochs,
                                                                      args.subset)
        model = load_backbone(path)
        cpu[name] = float(model.meta.get("cpu_seconds", 0.0))
        # a file made by --init-from records its own run; the chain's total when it was known
        total = epochs_trained(model.meta)
        last = len(json.loads(model.meta.get("history", "[]")))
        about[name] = (f"`{path}` (sha256 {model.sha256[:12]}, "
                       + (f"{total} epochs in all, {last} in its last run)" if total else
                          f"{last} epochs in its last run, earlier runs not recorded in it)"))
        results[name] = panel_accuracy(model, val, bn_images, panel)
        print(json.dumps({"recipe": name, "val_top1": results[name]}), flush=True)

    # a net trained alone keeps the BN statistics it was trained with, as bench_backbone uses it
    alone = {}
    for cid, net in alone_nets.items():
        config = CompressionConfig.from_id(cid, DEFAULT_SPACE)
        alone[cid] = 100.0 * evaluate(net.materialise(config).eval(), val, config.resolution)
    if alone:
        print(json.dumps({"alone": "val_top1", **alone}), flush=True)
    rows = [[cid] + [f"{results[n][cid]:.2f}" for n in names]
            + ([f"{alone[cid]:.2f}" if cid in alone else ""] if alone else []) for cid in panel]
    rows.append(["mean of the subnets (all but full)"]
                + [f"{statistics.mean(results[n][c] for c in PANEL[1:]):.2f}" for n in names])
    if front:
        rows.append([f"mean of the front of `{args.front_of}` ({len(front)} variants, full "
                     "left out)"]
                    + [f"{statistics.mean(results[n][c] for c in front):.2f}" for n in names])
    if twins:
        rows.append([f"mean of that front with {args.operator_twins} in every stage "
                     f"({len(twins)} variants)"]
                    + [f"{statistics.mean(results[n][c] for c in twins):.2f}" for n in names])
    if alone:
        rows.append(["mean gap to the nets trained alone (shared - alone)"]
                    + [f"{statistics.mean(results[n][c] - alone[c] for c in alone):+.2f}"
                       for n in names])
    rows.append(["training CPU min (the last run)"] + [f"{cpu[n] / 60:.0f}" for n in names])
    if alone:
        rows = [row + [""] * (len(names) + 2 - len(row)) for row in rows]
    if args.backbones:
        origin = ["- Backbones: " + "; ".join(f"{n}: {about[n]}" for n in names) + "."]
        command = (f".venv/bin/python -m bench.bench_recipes --backbones {args.backbones}"
                   + (f" --front-of {args.front_of}" if args.front_of else "")
                   + (f" --alone {args.alone}" if alone else "")
                   + (f" --operator-twins {args.operator_twins}" if twins else ""))
        # an operator stage gets a section of its own: the other backbones' stays as it was
        if twins:
            section = ("recipes-operator", "Operator stage side by side (validation split)",
                       command)
        else:
            section = ("recipes-backbones", "Trained backbones side by side (validation split)",
                       command)
    else:
        origin = [f"- Each recipe: `adaspring train --epochs {args.epochs}` from scratch (1 "
                  "warm-up epoch, seed 0) plus its options: "
                  + "; ".join(f"{n}: `{' '.join(RECIPES[n]) or '(none)'}`" for n in names) + "."]
        section = ("recipes", "Training recipes side by side (short runs, validation split)",
                   f".venv/bin/python -m bench.bench_recipes --epochs {args.epochs}"
                   + (f" --recipes {','.join(names)}" if names != list(FIRST_RECIPES) else "")
                   + (f" --subset {args.subset}" if args.subset else "")
                   + (f" --front-of {args.front_of}" if args.front_of else "")
                   + (f" --operator-twins {args.operator_twins}" if twins else "")
                   + (f" --alone {args.alone}" if alone else ""))
    if args.section:
        section = (args.section, args.title or section[1],
                   section[2] + f" --section {args.section}"
                   + (f" --title '{args.title}'" if args.title else ""))
    body = [
        markdown_table(["variant (validation top-1 %)", *names, *(["alone"] if alone else [])],
                       rows),
        "",
        *origin,
        *(["- Trained alone (column alone; their own BN statistics): "
           + "; ".join(f"`{path}`" for path in filter(None, args.alone.split(","))) + "."]
          if alone else []),
        f"- Validation: the {len(val)} held-out training images (the test split is not used to "
        f"choose a recipe); each variant's BN statistics from {len(bn_images)} training images.",
        "- One seed per recipe: differences of a few tenths of a point are within run-to-run "
        "noise (~0.3 pt on 5000 images).",
    ]
    write_section(*section, "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
