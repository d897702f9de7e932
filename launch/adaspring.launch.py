"""Launch the adaspring pipeline on a robot: perception, context and evolution nodes.

    ros2 launch adaspring_ros adaspring.launch.py image_topic:=/my_camera/image_raw

Every node reads its parameters from config/adaspring.yaml (or ``params_file:=``); the camera
topic is remapped, so any driver publishing sensor_msgs/Image works unchanged. The context
node's ``source`` and ``scenario`` come from the ``context_source`` / ``scenario`` launch
arguments (they override the YAML), e.g. ``context_source:=battery_state`` on a robot with a
battery driver.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'adaspring_ros'


def generate_launch_description():
    params_file = LaunchConfiguration('params_file')
    image_topic = LaunchConfiguration('image_topic')
    context_source = LaunchConfiguration('context_source')
    scenario = LaunchConfiguration('scenario')
    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), 'config',
                                                'adaspring.yaml']),
            description='YAML with the ros__parameters of every node'),
        DeclareLaunchArgument(
            'image_topic', default_value='/camera/image_raw',
            description='sensor_msgs/Image topic the perception node classifies'),
        DeclareLaunchArgument(
            'context_source', default_value='psutil',
            description='context_node source: psutil, battery_state or scenario'),
        DeclareLaunchArgument(
            'scenario', default_value='scenarios/mixed.yaml',
            description='scenario trace (relative to config/) when context_source is scenario'),
    ]
    nodes = [
        Node(package=PACKAGE, executable='perception_node', name='perception_node',
             parameters=[params_file], remappings=[('/camera/image_raw', image_topic)],
             output='screen'),
        Node(package=PACKAGE, executable='context_node', name='context_node',
             parameters=[params_file, {'source': context_source, 'scenario': scenario}],
             output='screen'),
        Node(package=PACKAGE, executable='evolution_node', name='evolution_node',
             parameters=[params_file], output='screen'),
    ]
    return LaunchDescription(arguments + nodes)
