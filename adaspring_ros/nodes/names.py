"""Default names of the adaspring ROS graph (topics and the service); see qos.py for the QoS
of each. No rclpy here, so the node settings can name them without ROS."""

IMAGE_TOPIC = "/camera/image_raw"
BATTERY_TOPIC = "/battery_state"
CONTEXT_TOPIC = "/adaspring/context"
RESULT_TOPIC = "/adaspring/result"
CLASSIFICATION_TOPIC = "/adaspring/classification"
LABEL_INFO_TOPIC = "/adaspring/label_info"
METRICS_TOPIC = "/adaspring/metrics"
CONFIG_TOPIC = "/adaspring/config"
MODEL_INFO_TOPIC = "/adaspring/model_info"
DEBUG_IMAGE_TOPIC = "/adaspring/debug_image"
RECONFIGURE_SERVICE = "/adaspring/perception/reconfigure"
DIAGNOSTICS_TOPIC = "/diagnostics"

# How the perception node receives frames, as image_transport names them: "raw" subscribes
# sensor_msgs/Image on the image topic, "compressed" sensor_msgs/CompressedImage on
# <image topic>/compressed.
TRANSPORTS = ("raw", "compressed")


def transport_topic(image_topic: str, transport: str) -> str:
    """The topic a subscriber of ``transport`` reads for ``image_topic`` (image_transport's
    naming: raw is the topic itself, any other transport a sub-topic of its name)."""
    if transport == "raw":
        return image_topic
    return f"{image_topic.rstrip('/')}/{transport}"
