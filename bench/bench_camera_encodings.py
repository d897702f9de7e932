"""What each camera encoding costs the perception node per frame, before the forward pass.

For a 640x480 frame in every encoding the node reads (sensor_msgs/Image, and CompressedImage as
jpeg at quality 90 and png), times what the node's image callback does before the forward:
decode the message (``msg_convert``, as the node calls it, on the message object) and preprocess
to the model input at the shipped backbone's largest resolution. Also times the decode alone,
for a grey model (1 channel: the shipped one) and for a colour one (3 channels), and decode +
preprocess for the shipped colour backbone (models/colour) at its largest input. The frames are
camera-like: Fashion-MNIST test images letterboxed with bilinear upscaling onto a gradient,
tinted, plus Gaussian sensor noise (sigma 3), so the compressed sizes are those of a real
scene, not of a flat background. Medians and spreads over ``--frames`` frames (cycled over 20
distinct ones); prints the table and writes the ``camera_encodings`` section of
docs/benchmarks.md.

    .venv/bin/python -m bench.bench_camera_encodings [--frames 300] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

# One BLAS thread, as in the perception node (adaspring_ros/nodes/__init__.py): set before numpy
# loads OpenBLAS, else its thread pool contends for the cores and dominates these timings.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

from adaspring_ros import msg_convert
from adaspring_ros.core import paths
from adaspring_ros.core.data import datasets as data
from adaspring_ros.core.data.transforms import InputSpec, preprocess_frame
from adaspring_ros.core.model.checkpoint_reader import load_weight_bank
from adaspring_ros.core.model.config import DEFAULT_SPACE
from adaspring_ros.core.serving.replay import fit_frame
from bench.report import markdown_table, spread, write_section

RAW = ("mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8", "yuv422", "yuv422_yuy2")
COMPRESSED = (("jpeg", 90), ("png", 0))
DISTINCT = 20


def camera_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` 640x480 RGB frames that compress like a camera's (see the module docstring)."""
    rng = np.random.default_rng(seed)
    images = data.load_fashion_mnist("test").images[:count]
    yy, xx = np.mgrid[0:480, 0:640]
    background = 40 + 30 * (xx / 640) + 20 * (yy / 480)
    frames = []
    for image in images:
        grey = fit_frame(image, 640, 480, "bilinear").astype(np.float64)
        grey = np.maximum(grey, background)
        rgb = grey[:, :, None] * np.array([1.0, 0.85, 0.7]) + rng.normal(0, 3, (480, 640, 3))
        frames.append(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    return frames


def messages(frames: list[np.ndarray]) -> dict[str, tuple[list, Callable]]:
    """Per encoding: the frames as messages (data as rclpy holds it) and the node's decoder."""
    from sensor_msgs.msg import CompressedImage, Image

    out = {}
    for encoding in RAW:
        out[encoding] = ([msg_convert.numpy_to_image(f, encoding, Image) for f in frames],
                         msg_convert.image_to_numpy)
    for fmt, quality in COMPRESSED:
        name = f"{fmt} q{quality}" if fmt == "jpeg" else fmt
        out[name] = ([msg_convert.numpy_to_compressed(f, fmt, CompressedImage, quality)
                      for f in frames], msg_convert.compressed_to_numpy)
    return out


def timed(msgs: list, work: Callable, frames: int) -> list[float]:
    """ms of ``work(msg)`` for ``frames`` messages, cycling over ``msgs`` (one warm-up each)."""
    for msg in msgs:
        work(msg)
    samples = []
    for i in range(frames):
        msg = msgs[i % len(msgs)]
        start = time.perf_counter()
        work(msg)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def measure(name: str, msgs: list, decode: Callable, frames: int, resolution: int,
            colour_card: InputSpec) -> tuple:
    """One table row: the encoding's size and times (see the module docstring)."""
    size = np.median([len(m.data) for m in msgs]) / 1024
    node = spread(timed(msgs, lambda m: preprocess_frame(decode(m, 1), resolution), frames))
    side = max(colour_card.resolutions)
    colour_node = spread(timed(msgs, lambda m: preprocess_frame(decode(m, 3), side, colour_card),
                               frames))
    grey = spread(timed(msgs, lambda m: decode(m, 1), frames))
    colour = spread(timed(msgs, lambda m: decode(m, 3), frames))
    print(f"{name}: decode + preprocess p50 {node['p50']:.2f} ms", flush=True)
    return (name, f"{size:.0f}", f"{node['p50']:.2f}",
            f"{node['min']:.2f} / {node['p95']:.2f} / {node['max']:.2f}",
            f"{grey['p50']:.2f}", f"{colour['p50']:.2f}", f"{colour_node['p50']:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    resolution = max(DEFAULT_SPACE.resolutions)
    colour_card = load_weight_bank(paths.models_dir() / "colour" / "backbone.pt").card
    rows = [measure(name, msgs, decode, args.frames, resolution, colour_card)
            for name, (msgs, decode) in messages(camera_frames(DISTINCT)).items()]
    table = markdown_table(("encoding", "KiB / frame", "decode + preprocess p50 (ms)",
                            "min / p95 / max (ms)", "decode, grey model p50",
                            "decode, colour model p50",
                            f"decode + preprocess, colour model at {max(colour_card.resolutions)}"
                            " px p50"), rows)
    body = (
        f"{args.frames} frames per row (cycled over {DISTINCT} distinct 640x480 camera-like "
        f"frames: see the module docstring), timed one by one in this process as the "
        f"perception node's callback does it before the forward pass: the message decoded by "
        f"`msg_convert` (data as rclpy holds it) and preprocessed to {resolution} px, for the "
        "shipped grey backbone. The next two columns decode only, for a 1-channel and a "
        "3-channel model; the last one is the whole of it for the shipped colour backbone "
        "(models/colour) at its largest input. Times in ms.\n\n" + table + "\n\n"
        "How each is read (core/serving/image_codec.py, compressed_codec.py): raw colour and "
        "mono frames are views of the message's bytes (decoding costs nothing; the "
        "preprocessing's crop, BT.601 luma and resize is the cost, more for 4-byte pixels, "
        "read with a stride); mono16 keeps the high byte; for a grey model YUV 4:2:2 gives its "
        "Y plane rescaled from limited range and a colour JPEG only its luma plane (libjpeg "
        "skips the colour conversion), while a colour model pays the full BT.601 conversion "
        "of every pixel. PNG's cost is zlib's inflate of ~0.5 MB per frame.\n"
    )
    if args.no_write:
        print(body)
    else:
        write_section("camera_encodings", "What each camera encoding costs per frame",
                      "python -m bench.bench_camera_encodings", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
