"""QoS profiles and default names of the adaspring ROS graph, chosen in one place.

| name                              | type              | QoS                                   |
|-----------------------------------|-------------------|---------------------------------------|
| /camera/image_raw                 | sensor_msgs/Image | sensor data: best effort, keep last 1 |
| /battery_state                    | BatteryState      | sensor data                           |
| /adaspring/context                | ContextState      | reliable, keep last 1                 |
| /adaspring/result                 | InferenceResult   | reliable, keep last 10                |
| /adaspring/metrics                | PerformanceMetrics| reliable, keep last 10                |
| /adaspring/config                 | CompressionConfig | reliable, transient local, depth 1    |
| /adaspring/perception/reconfigure | srv/Reconfigure   | (services)                            |
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from .names import (  # noqa: F401  (re-exported: the nodes import names and QoS from here)
    BATTERY_TOPIC,
    CONFIG_TOPIC,
    CONTEXT_TOPIC,
    DIAGNOSTICS_TOPIC,
    IMAGE_TOPIC,
    METRICS_TOPIC,
    RECONFIGURE_SERVICE,
    RESULT_TOPIC,
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
DIAGNOSTICS_QOS = 10
