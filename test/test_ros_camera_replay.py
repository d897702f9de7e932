"""The replay camera as a real process over real DDS: size, encoding, labels, sources, params."""

from __future__ import annotations

import numpy as np
import pytest
from colour_model import CARD, write_colour_model, write_image_folder
from ros_harness import NodeProcess, set_parameters, spin_until
from test_serving_replay import write_bag

from adaspring_ros import msg_convert
from adaspring_ros.core.data import datasets as data
from adaspring_ros.core.data.transforms import preprocess
from adaspring_ros.core.serving.replay import parse_labelled_frame_id

pytestmark = pytest.mark.ros

NODE = "adaspring_ros.nodes.camera_replay_node"


def receive(node, topic: str, count: int, procs: list[NodeProcess], timeout: float = 20.0):
    """The first ``count`` Images on ``topic`` (subscribed with the sensor-data profile)."""
    from sensor_msgs.msg import Image

    from adaspring_ros.nodes.qos import SENSOR_QOS

    got = []
    node.create_subscription(Image, topic, got.append, SENSOR_QOS)
    spin_until(node, lambda: len(got) >= count, timeout, f"{count} images on {topic}", procs)
    return got


def test_fashion_mnist_frames_size_encoding_labels(rclpy_node, tmp_path):
    topic = "/test_replay/fm"
    camera = NodeProcess.module(NODE, tmp_path, ros_args=[
        "-p", f"image_topic:={topic}", "-p", "width:=640", "-p", "height:=480",
        "-p", "encoding:=bgr8", "-p", "limit:=5", "-p", "rate_hz:=50.0"])
    try:
        frames = receive(rclpy_node, topic, 12, [camera])
        # Run-time parameters: out of range or unknown values are refused, valid ones apply.
        results = set_parameters(rclpy_node, "camera_replay_node",
                                 {"rate_hz": 0.0}, [camera])
        assert not results[0].successful
        results = set_parameters(rclpy_node, "camera_replay_node",
                                 {"encoding": "nv12"}, [camera])
        assert not results[0].successful and "nv12" in results[0].reason
        results = set_parameters(rclpy_node, "camera_replay_node",
                                 {"source": "bag"}, [camera])
        assert not results[0].successful  # read-only
        results = set_parameters(rclpy_node, "camera_replay_node",
                                 {"encoding": "mono8", "width": 320, "height": 0}, [camera])
        assert all(r.successful for r in results)
        spin_until(rclpy_node, lambda: frames[-1].encoding == "mono8", 10,
                   "a mono8 frame after the change", [camera])
    finally:
        assert camera.stop() == 0, camera.output()
    test = data.load_fashion_mnist("test")
    first = frames[0]
    assert (first.width, first.height, first.encoding, first.step) == (640, 480, "bgr8", 1920)
    for msg in frames[:12]:
        label, seq = parse_labelled_frame_id(msg.header.frame_id)
        assert msg.header.frame_id.startswith("camera/label=")
        assert label == test.labels[seq % 5]  # limit=5, loop: the first five test images
        assert msg.header.stamp.sec > 0
        # Letterboxed: the perception node's centre crop + resize gives back the source image
        # (up to the blur of a 17.1x nearest upscale followed by an antialiased downscale).
        pixels = msg_convert.image_to_numpy(msg)
        assert pixels[:, :80].max() == 0 and pixels[:, -80:].max() == 0
        restored = preprocess(pixels, 28).flatten()
        original = preprocess(test.images[seq % 5], 28).flatten()
        assert np.corrcoef(restored, original)[0, 1] > 0.95
    last = frames[-1]
    assert (last.width, last.height, last.step) == (320, 320, 320)  # square source


def test_image_folder_replays_colour_frames_labelled_in_the_cards_order(rclpy_node, tmp_path):
    from dataclasses import replace

    from adaspring_ros.core.serving.replay import fit_frame, read_image

    root = write_image_folder(tmp_path / "task")     # test/{apple,bus,cat}/, a README, a grey
    order = ("cat", "apple", "bus")                   # the card's order, not the folders'
    backbone, _ = write_colour_model(tmp_path / "model", replace(CARD, classes=order))
    topic = "/test_replay/folder"
    camera = NodeProcess.module(NODE, tmp_path, ros_args=[
        "-p", f"image_topic:={topic}", "-p", "source:=image_folder", "-p", f"path:={root}",
        "-p", f"backbone_path:={backbone}", "-p", "loop:=false", "-p", "rate_hz:=4.0",
        "-p", "frame_id:=cam0"])
    try:
        # wait_for_subscriber (default) holds the replay until the camera sees our reader; our
        # side may match the camera later on a busy machine, so some of the 7 best-effort
        # frames may be lost: >= 1 of them is expected.
        frames = receive(rclpy_node, topic, 1, [camera])
        spin_until(rclpy_node, lambda: "replay finished after 7 frames" in camera.output(), 20,
                   "the end of the replay (loop:=false)")
    finally:
        camera.stop()
    assert "7 images of" in camera.output() and "['cat', 'apple', 'bus']" in camera.output()
    files = sorted((root / "test").glob("*/*.*"))     # the replay's order: class, then file
    for msg in frames:
        label, seq = parse_labelled_frame_id(msg.header.frame_id)
        assert (msg.width, msg.height, msg.encoding) == (640, 480, "rgb8")
        assert msg.header.frame_id.startswith("cam0/")
        source = files[seq]
        assert order[label] == source.parent.name
        expected = fit_frame(read_image(source), 640, 480, "nearest")
        if expected.ndim == 2:
            expected = np.repeat(expected[..., None], 3, axis=2)
        assert np.array_equal(msg_convert.image_to_numpy(msg), expected)


def test_bag_source(rclpy_node, tmp_path):
    frames = [(np.full((24, 32), 10 * i, np.uint8), f"cam/label={i}/seq=99") for i in range(3)]
    frames.append((np.full((24, 32), 200, np.uint8), "optical_frame"))  # no label
    frames.append((np.full((24, 32), 7, np.uint8), "bad"))  # 16UC1: skipped with a warning
    write_bag(tmp_path / "replay_bag", frames)
    topic = "/test_replay/bag"
    camera = NodeProcess.module(NODE, tmp_path, ros_args=[
        "-p", f"image_topic:={topic}", "-p", "source:=bag", "-p", f"path:={tmp_path}/replay_bag",
        "-p", "width:=64", "-p", "height:=48", "-p", "encoding:=mono8",
        "-p", "interpolation:=bilinear", "-p", "rate_hz:=100.0"])
    try:
        got = receive(rclpy_node, topic, 8, [camera])
        assert "skipped: bag frame 5: unsupported encoding '16UC1'" in camera.output()
    finally:
        camera.stop()
    for msg in got:
        label, seq = parse_labelled_frame_id(msg.header.frame_id)
        assert (msg.width, msg.height, msg.encoding) == (64, 48, "mono8")
        # The bag's label survives, its seq is replaced by the replay's own counter (which
        # does not count the skipped frame).
        assert label == (seq % 4 if seq % 4 < 3 else None)
        expected = 10 * (seq % 4) if seq % 4 < 3 else 200
        assert np.all(msg_convert.image_to_numpy(msg) == expected)


@pytest.mark.parametrize("args, message", [
    (["-p", "source:=webcam"], "source: 'webcam' is not one of"),
    (["-p", "source:=image_folder"], "needs a path"),
    (["-p", "source:=image_folder", "-p", "path:={tmp}/empty"], "has no class sub-folders"),
    (["-p", "source:=image_folder", "-p", "path:={tmp}/task", "-p", "backbone_path:={backbone}"],
     "class folder(s) ['zebra'] are not among the model's classes ['apple', 'bus', 'cat']"),
    (["-p", "source:=bag", "-p", "path:=/nonexistent.bag"], "cannot read bag"),
    (["-p", "rate_hz:=0.0"], "rate_hz"),
])
def test_bad_start_parameters_exit_cleanly(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    write_image_folder(tmp_path / "task", ("apple", "zebra"))
    backbone, _ = write_colour_model(tmp_path / "model")
    args = [a.format(tmp=tmp_path, backbone=backbone) for a in args]
    camera = NodeProcess.module(NODE, tmp_path, ros_args=args)
    try:
        code = camera.proc.wait(30)
    finally:
        camera.kill()
    assert code != 0
    assert message in camera.output()
    assert "Traceback" not in camera.output()
