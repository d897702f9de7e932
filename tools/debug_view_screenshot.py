"""Write the README's screenshot of the debug view (docs/debug_view.png) from real nodes.

    PYTHONPATH=. .venv/bin/python tools/debug_view_screenshot.py [out.png] [--seq N]

Starts the replay camera (Fashion-MNIST test set, 640x480 rgb8, 10 Hz) and the perception node
with ``debug_image:=true`` on a private ROS domain, and saves the first annotated frame of a
replayed image numbered ``N`` (default 20) or later as a PNG.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image as PilImage

from adaspring_ros import msg_convert
from adaspring_ros.core import paths
from adaspring_ros.core.serving.replay import parse_labelled_frame_id
from adaspring_ros.demo.graph import (
    SOURCE_ROOT,
    ChildProcesses,
    ros_environment,
    spin_until,
    use_environment,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(SOURCE_ROOT / "docs" / "debug_view.png"))
    parser.add_argument("--seq", type=int, default=20,
                        help="capture the first annotated image numbered this or later")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="adaspring-debug-view-"))
    env = ros_environment(log_dir)
    use_environment(env)
    import rclpy
    from sensor_msgs.msg import Image

    from adaspring_ros.nodes.qos import DEBUG_IMAGE_QOS, DEBUG_IMAGE_TOPIC

    params = paths.config_dir() / "adaspring.yaml"
    children = ChildProcesses(env, log_dir)
    views: list = []
    try:
        children.start_node("camera_replay_node", params, {"rate_hz": 10.0})
        children.start_node("perception_node", params,
                            {"debug_image": True, "debug_image_rate_hz": 30.0})
        with rclpy.init():
            node = rclpy.create_node("debug_view_screenshot")
            node.create_subscription(Image, DEBUG_IMAGE_TOPIC, views.append, DEBUG_IMAGE_QOS)

            def wanted() -> list:
                return [v for v in views
                        if parse_labelled_frame_id(v.header.frame_id)[1] >= args.seq]

            spin_until(node, wanted, 120.0 + args.seq / 10.0,
                       f"the debug view of image {args.seq} or later", children.procs.values())
            view = wanted()[0]
    finally:
        children.stop_all()
    PilImage.fromarray(msg_convert.image_to_numpy(view)).save(args.out, optimize=True)
    print(f"{args.out}: {view.width}x{view.height} {view.encoding}, {view.header.frame_id}")


if __name__ == "__main__":
    main()
