"""adaspring_ros: runtime-adaptive DNN compression (AdaSpring) for ROS 2 robots."""

__version__ = "0.1.0"
