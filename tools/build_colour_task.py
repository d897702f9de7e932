"""Build the shipped colour example task from Debian's clip-art packages, deterministically.

    apt-get install openclipart-png tuxpaint-stamps-default
    python tools/build_colour_task.py --out runs/colour-task

Eight object classes, each drawn from both packages (openclipart: line-art and flat colour;
tuxpaint-stamps: many photo cut-outs), are composited with their alpha onto procedural backgrounds
(two-colour gradients, noise, blobs) at a random scale, position, rotation and mirror, and written
as an image folder with ``train/``, ``val/`` and ``test/`` splits of one sub-folder per class.
Backgrounds are procedural so that no background carries a class.

Two ways to split (``--split``):

* ``objects`` (the shipped task): a robot's *known objects*. Per class, ``--objects-per-class``
  drawings (chosen by a hash of their names; one file per drawing) are the objects; each appears
  in every split, in different composites: the test split measures recognising those objects
  in new poses, sizes and scenes, which is what a robot that meets the same objects needs.
* ``drawings``: unseen objects. Near-identical files of one drawing (``dog_01.png``,
  ``dog_02.png``) share a group, and a group goes to exactly one split, chosen by a hash of its
  name, so the test split measures objects the network never saw. From 683 training drawings a
  network trained from scratch on a CPU-hour learns little of that (docs/benchmarks.md,
  *The colour example*).

Same inputs, same arguments -> byte-identical PNGs (seeded per source file and composite; no
global RNG); a split's files do not depend on which other splits are built.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

OPENCLIPART = Path("/usr/share/openclipart/png")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")

# class -> folders (relative to the package roots); subfolders are included.
CLASSES: dict[str, tuple[tuple[Path, str], ...]] = {
    "mammal": ((OPENCLIPART, "animals/mammals"), (TUXPAINT, "animals/mammals")),
    "bird": ((OPENCLIPART, "animals/birds"), (TUXPAINT, "animals/birds")),
    "insect": ((OPENCLIPART, "animals/bugs"), (TUXPAINT, "animals/insects")),
    "fruit": ((OPENCLIPART, "food/fruit"), (TUXPAINT, "food/fruit")),
    "plant": ((OPENCLIPART, "plants"), (TUXPAINT, "plants")),
    "vehicle": ((OPENCLIPART, "transportation/vehicles"), (TUXPAINT, "vehicles")),
    "tool": ((OPENCLIPART, "tools"), (TUXPAINT, "household/tools")),
    "building": ((OPENCLIPART, "buildings"), (TUXPAINT, "town/houses")),
}
EXCLUDE = ("tools/weapons",)  # not a robot's everyday tool, and a class of its own in spirit
SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
_GROUP_SUFFIX = re.compile(r"(_\d+)+$")


def sources(cls: str) -> list[Path]:
    """The PNG files of one class, sorted."""
    out = []
    for root, folder in CLASSES[cls]:
        base = root / folder
        out += [p for p in base.rglob("*.png")
                if not any(str(p.relative_to(root)).startswith(e) for e in EXCLUDE)]
    return sorted(out)


def group_of(path: Path) -> str:
    """Near-identical files of one drawing share a group: the name without trailing _NN."""
    return f"{path.parent.name}/{_GROUP_SUFFIX.sub('', path.stem)}"


def split_of(group: str) -> str:
    """train / val / test by a stable hash of the group name."""
    u = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if u < edge:
            return name
    return SPLITS[-1][0]


def objects_of(files: list[Path], per_class: int) -> list[Path]:
    """The known objects of a class: one file (the first) of each drawing group, groups in
    the order of a hash of their names, unreadable files passed over, ``per_class`` of them."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(group_of(path), []).append(path)
    chosen = []
    for group in sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest()):
        first = groups[group][0]
        obj = load_rgba(first)
        if obj is not None and obj.getchannel("A").getbbox() is not None:
            chosen.append(first)
        if len(chosen) == per_class:
            break
    return chosen


def _name(path: Path, k: int) -> str:
    """A composite's file name: the package, the drawing's folder and name, the composite."""
    package = "tuxpaint" if path.is_relative_to(TUXPAINT) else "openclipart"
    return f"{package}_{path.parent.name}_{path.stem}_{k}.png"


def _seed(path: Path, k: int) -> int:
    return int(hashlib.sha256(f"{path.name}:{k}".encode()).hexdigest()[:16], 16)


def background(size: int, rng: np.random.Generator) -> Image.Image:
    """A two-colour gradient at a random angle with noise and a few soft blobs."""
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    for _ in range(int(rng.integers(0, 4))):
        cx, cy, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 10, size / 3)]
        mask = np.exp(-(((xx * size - cx) ** 2 + (yy * size - cy) ** 2) / (2 * r * r)))
        img = img * (1 - 0.6 * mask[..., None]) + rng.integers(0, 256, 3) * 0.6 * mask[..., None]
    img = img + rng.normal(0, rng.uniform(2, 18), img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def composite(obj: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """``obj`` (RGBA) scaled to 45-90 % of the frame, rotated, mirrored, placed on a background."""
    obj = obj.copy()
    if rng.random() < 0.5:
        obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    obj = obj.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BICUBIC, expand=True)
    bbox = obj.getchannel("A").getbbox()
    if bbox:
        obj = obj.crop(bbox)
    scale = rng.uniform(0.45, 0.9) * size / max(obj.size)
    w, h = max(1, round(obj.width * scale)), max(1, round(obj.height * scale))
    obj = obj.resize((w, h), Image.Resampling.LANCZOS)
    canvas = background(size, rng)
    x = int(rng.integers(0, size - w + 1))
    y = int(rng.integers(0, size - h + 1))
    canvas.paste(obj, (x, y), obj)
    return canvas


def load_rgba(path: Path) -> Image.Image | None:
    """The drawing as RGBA, at most 512 px a side (some clip art is 10^4 px wide); None when
    unreadable or too large to decode safely."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            im.draft("RGBA", (512, 512))
            im.thumbnail((512, 512), Image.Resampling.LANCZOS)
            return im.convert("RGBA")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def build(out: Path, size: int, per_source: dict[str, int],
          splits: tuple[str, ...] = tuple(s for s, _ in SPLITS), split_by: str = "objects",
          objects_per_class: int = 16) -> dict:
    """Write the ``splits`` of the task under ``out`` and return its manifest (counts per split
    and class). ``per_source``: composites of each drawing in each split."""
    sources_per_split: dict[str, dict[str, int]] = {s: {} for s, _ in SPLITS}
    skipped = 0
    for cls in CLASSES:
        files = sources(cls)
        if not files:
            raise FileNotFoundError(f"no PNG for class {cls!r} under {CLASSES[cls]}: install "
                                    "openclipart-png and tuxpaint-stamps-default")
        if split_by == "objects":
            files = objects_of(files, objects_per_class)
        for path in files:
            # composite numbers: in "objects", one run of numbers over train, val, test
            plan, first = [], 0
            for split, _ in SPLITS:
                if split_by == "objects" or split == split_of(group_of(path)):
                    plan.append((split, range(first, first + per_source[split])))
                    if split_by == "objects":
                        first += per_source[split]
            plan = [(split, ks) for split, ks in plan if split in splits]
            if not plan:
                continue
            obj = load_rgba(path)
            if obj is None or obj.getchannel("A").getbbox() is None:
                skipped += 1
                continue
            for split, ks in plan:
                folder = out / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for k in ks:
                    img = composite(obj, size, np.random.default_rng(_seed(path, k)))
                    img.save(folder / _name(path, k), optimize=False)
                sources_per_split[split][cls] = sources_per_split[split].get(cls, 0) + 1
    counts = {s: {cls: len(list((out / s / cls).glob("*.png"))) for cls in CLASSES
                  if (out / s / cls).is_dir()} for s, _ in SPLITS}
    manifest = {"classes": list(CLASSES), "size": size, "split_by": split_by,
                "objects_per_class": objects_per_class if split_by == "objects" else None,
                "per_source": per_source, "images": counts, "drawings": sources_per_split,
                "skipped_unreadable": skipped,
                "packages": ["openclipart-png", "tuxpaint-stamps-default"]}
    (out / "task.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--size", type=int, default=96, help="side of the square images, px")
    parser.add_argument("--split", choices=("objects", "drawings"), default="objects",
                        help="objects: known objects in new composites (the shipped task); "
                             "drawings: unseen drawings in val/ and test/")
    parser.add_argument("--objects-per-class", type=int, default=16,
                        help="with --split objects: drawings per class")
    parser.add_argument("--train-per-drawing", type=int, default=80,
                        help="composites per drawing in train/")
    parser.add_argument("--eval-per-drawing", type=int, default=8,
                        help="composites per drawing in val/ and test/")
    parser.add_argument("--splits", default="train,val,test",
                        help="the splits to build, comma-separated (the demo needs only test)")
    args = parser.parse_args(argv)
    splits = tuple(s for s in args.splits.split(",") if s)
    unknown = set(splits) - {s for s, _ in SPLITS}
    if unknown or not splits:
        print(f"--splits: of train, val, test (got {args.splits!r})", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} is not empty; choose a new folder", file=sys.stderr)
        return 2
    per = {"train": args.train_per_drawing, "val": args.eval_per_drawing,
           "test": args.eval_per_drawing}
    manifest = build(args.out, args.size, per, splits, args.split, args.objects_per_class)
    for split, by_class in manifest["images"].items():
        if split not in splits:
            continue
        print(f"{split:5s} {sum(by_class.values()):6d} images  "
              + " ".join(f"{c}={manifest['drawings'][split].get(c, 0)}" for c in CLASSES))
    print(f"skipped (unreadable or empty): {manifest['skipped_unreadable']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
