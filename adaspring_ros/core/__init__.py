"""ROS-free core of adaspring_ros: importable and testable with torch alone, never rclpy."""
