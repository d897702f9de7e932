"""Thin rclpy adapters around adaspring_ros.core, one file per node."""
