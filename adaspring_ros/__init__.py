"""adaspring_ros: runtime-adaptive DNN compression (AdaSpring) for ROS 2 robots."""

# The rosidl-generated adaspring_ros.msg / adaspring_ros.srv live in the installed copy of this
# package (colcon build). Extending __path__ lets a source checkout on sys.path still find them,
# while its own modules take precedence.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
