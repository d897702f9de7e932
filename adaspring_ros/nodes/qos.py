"""QoS profiles and default names of the adaspring ROS graph, chosen in one place.

| name                              | type              | QoS                                   |
|-----------------------------------|-------------------|---------------------------------------|
| /camera/image_raw                 | sensor_msgs/Image | sensor data: best effort, keep last 1 |
| /camera/image_raw/compressed      | CompressedImage   | the same (transport: compressed)      |
| /battery_state                    | BatteryState      | sensor data                           |
| /adaspring/context                | ContextState      | reliable, keep last 1                 |
| /adaspring/result                 | InferenceResult   | reliable, keep last 10                |
| /adaspring/classification         | Classification    | reliable, keep last 10                |
| /adaspring/label_info             | LabelInfo         | reliable, transient local, depth 1    |
| /adaspring/metrics                | PerformanceMetrics| reliable, keep last 10                |
| /adaspring/config                 | CompressionConfig | reliable, transient local, depth 1    |
| /adaspring/model_info             | ModelInfo         | reliable, transient local, depth 1    |
| /adaspring/debug_image            | sensor_msgs/Image | sensor data (only when debug_image)   |
| /adaspring/perception/reconfigure | srv/Reconfigure   | (services)                            |

Classification and LabelInfo are vision_msgs' (optional: see vision_out.py).
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from adaspring_ros.nodes.names import (  # noqa: F401  (re-exported: the nodes import names and QoS from here)
    BATTERY_TOPIC,
    CLASSIFICATION_TOPIC,
    CONFIG_TOPIC,
    CONTEXT_TOPIC,
    DEBUG_IMAGE_TOPIC,
    DIAGNOSTICS_TOPIC,
    IMAGE_TOPIC,
    LABEL_INFO_TOPIC,
    METRICS_TOPIC,
    MODEL_INFO_TOPIC,
    RECONFIGURE_SERVICE,
    RESULT_TOPIC,
    transport_topic,
)

# Camera frames: never queue stale frames behind the one being processed.
IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
)
# Publishers of camera frames and battery use the stock sensor-data profile.
SENSOR_QOS = qos_profile_sensor_data
# Only the newest context matters.
CONTEXT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
)
RESULT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
)
METRICS_QOS = RESULT_QOS
# Latched: a late `ros2 topic echo /adaspring/config` still sees the active variant.
CONFIG_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Latched too: published once per configuration, yet a late subscriber or a rosbag recording
# started later still gets the class names and the backbone's identity to decode results.
MODEL_INFO_QOS = CONFIG_QOS
# vision_msgs beside them (nodes/vision_out.py): each result as a Classification, and the class
# list as LabelInfo, latched like ModelInfo (once per configuration).
CLASSIFICATION_QOS = RESULT_QOS
LABEL_INFO_QOS = CONFIG_QOS
# Annotated frames for a person to look at: the newest one only, like any camera stream.
DEBUG_IMAGE_QOS = SENSOR_QOS
DIAGNOSTICS_QOS = 10
