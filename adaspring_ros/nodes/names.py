"""Default names of the adaspring ROS graph (topics and the service); see qos.py for the QoS
of each. No rclpy here, so the node settings can name them without ROS."""

IMAGE_TOPIC = "/camera/image_raw"
BATTERY_TOPIC = "/battery_state"
CONTEXT_TOPIC = "/adaspring/context"
RESULT_TOPIC = "/adaspring/result"
METRICS_TOPIC = "/adaspring/metrics"
CONFIG_TOPIC = "/adaspring/config"
MODEL_INFO_TOPIC = "/adaspring/model_info"
DEBUG_IMAGE_TOPIC = "/adaspring/debug_image"
RECONFIGURE_SERVICE = "/adaspring/perception/reconfigure"
DIAGNOSTICS_TOPIC = "/diagnostics"
