"""The perception node's results as vision_msgs, the messages robot integrators' downstream nodes
and rviz plugins read, beside the package's own InferenceResult (which keeps the variant and the
latency):

* ``/adaspring/classification``, vision_msgs/Classification, one per result while anyone
  subscribes: the image's header and one hypothesis, the class name in ``class_id`` and the
  top-1 score (RESULT_QOS);
* ``/adaspring/label_info``, vision_msgs/LabelInfo, once per configuration: class index -> name
  of the served backbone, reliable and transient local, so a late subscriber still gets it.

vision_msgs is optional (an exec_depend): where it is not importable the node says so once and
publishes its own messages only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rclpy.node import Node

from adaspring_ros import msg_convert
from adaspring_ros.nodes.qos import (
    CLASSIFICATION_QOS,
    CLASSIFICATION_TOPIC,
    LABEL_INFO_QOS,
    LABEL_INFO_TOPIC,
    RESULT_TOPIC,
)

try:
    from vision_msgs.msg import Classification, LabelInfo, ObjectHypothesis, VisionClass
except ImportError as exc:  # not installed: the node publishes its own messages only
    MISSING = f"vision_msgs is not importable ({exc})"
else:
    MISSING = ""

__all__ = ["VisionOut", "MISSING"]


class VisionOut:
    """The vision_msgs publishers of one configuration of ``node``: the constructor creates them
    and publishes the LabelInfo of ``class_names``; :meth:`destroy` removes them."""

    def __init__(self, node: Node, class_names: Sequence[str]) -> None:
        self.node = node
        self.classification_publisher = self.label_info_publisher = None
        if MISSING:
            node.get_logger().warning(
                f"{MISSING}: results go to {RESULT_TOPIC} only, not to {CLASSIFICATION_TOPIC} "
                f"and {LABEL_INFO_TOPIC}", once=True)
            return
        self.classification_publisher = node.create_publisher(
            Classification, CLASSIFICATION_TOPIC, CLASSIFICATION_QOS)
        self.label_info_publisher = node.create_publisher(LabelInfo, LABEL_INFO_TOPIC,
                                                          LABEL_INFO_QOS)
        label_info = msg_convert.label_info_to_msg(list(class_names), LabelInfo, VisionClass)
        label_info.header.stamp = node.get_clock().now().to_msg()
        self.label_info_publisher.publish(label_info)

    def publish(self, result: Any) -> None:
        """``result``, an adaspring_ros/InferenceResult, as a Classification, while anyone
        subscribes (as image_transport publishes): with no reader, building the message would
        be a camera frame's CPU spent on nothing."""
        publisher = self.classification_publisher
        if publisher is not None and publisher.get_subscription_count():
            publisher.publish(
                msg_convert.classification_to_msg(result, Classification, ObjectHypothesis))

    def destroy(self) -> None:
        """Remove the publishers (the node is going back to unconfigured)."""
        for publisher in (self.classification_publisher, self.label_info_publisher):
            if publisher is not None:
                self.node.destroy_publisher(publisher)
        self.classification_publisher = self.label_info_publisher = None
