"""Launch the adaspring pipeline on a robot: perception, context and evolution nodes.

    ros2 launch adaspring_ros adaspring.launch.py image_topic:=/my_camera/image_raw

Every node reads its parameters from config/adaspring.yaml (or ``params_file:=``); the camera
topic is remapped, so any driver publishing sensor_msgs/Image works unchanged
(``transport:=compressed``: its sensor_msgs/CompressedImage on ``<image_topic>/compressed``,
overriding the YAML). The context
node's ``source`` and ``scenario`` come from the ``context_source`` / ``scenario`` launch
arguments (they override the YAML), e.g. ``context_source:=battery_state`` on a robot with a
battery driver.

Another model: ``backbone:=/path/backbone.pt profile_table:=/path/profile_table.json`` (the table
measured for that backbone, in the engine it serves in); the perception node preprocesses frames
as the backbone's model card says and both nodes take the variants of its own search space. Like
``context_source``, they override the YAML's ``backbone_path`` / ``profile_table`` ('' = the
shipped Fashion-MNIST model).

``managed:=true`` starts the perception node as a managed (lifecycle) node: with
``autostart:=true`` (the default) this file takes it through configure and activate itself; with
``autostart:=false`` it waits, unconfigured, for a lifecycle manager (e.g. nav2's
lifecycle_manager listing ``perception_node``). The default is a plain node that configures and
activates itself, as most ROS 2 drivers do. The transitions are requested with launch events
rather than LifecycleNode's ``autostart`` argument, so the file also runs on Humble.

A node that cannot start (a parameter value out of its range or not among its choices, missing
weights: one FATAL line says which) exits with code 2, and then this launch stops every other
node too, so that no graph runs half-configured.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, Shutdown
from launch.conditions import IfCondition, UnlessCondition
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch.substitutions import (
    AndSubstitution,
    LaunchConfiguration,
    PathJoinSubstitution,
)
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

PACKAGE = 'adaspring_ros'
CANNOT_START = 2  # the exit code of an adaspring node that refused its parameters or data


def stop_all_if_one_cannot_start(event, context):
    """OnProcessExit callback: shut the launch down when a node exited with CANNOT_START."""
    if event.returncode == CANNOT_START:
        return Shutdown(reason=f'{event.action.name} cannot start (see its FATAL line)')
    return None


def generate_launch_description():
    params_file = LaunchConfiguration('params_file')
    image_topic = LaunchConfiguration('image_topic')
    transport = LaunchConfiguration('transport')
    context_source = LaunchConfiguration('context_source')
    scenario = LaunchConfiguration('scenario')
    managed = LaunchConfiguration('managed')
    autostart = LaunchConfiguration('autostart')
    backbone = LaunchConfiguration('backbone')
    profile_table = LaunchConfiguration('profile_table')
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
            'transport', default_value='raw',
            description='raw: sensor_msgs/Image on image_topic; compressed: '
                        'sensor_msgs/CompressedImage (jpeg, png) on <image_topic>/compressed'),
        DeclareLaunchArgument(
            'context_source', default_value='psutil',
            description='context_node source: psutil, battery_state or scenario'),
        DeclareLaunchArgument(
            'scenario', default_value='scenarios/mixed.yaml',
            description='scenario trace (relative to config/) when context_source is scenario'),
        DeclareLaunchArgument(
            'backbone', default_value='',
            description="backbone checkpoint the perception node serves ('' = the shipped one)"),
        DeclareLaunchArgument(
            'profile_table', default_value='',
            description="profile table measured for that backbone ('' = the shipped one)"),
        DeclareLaunchArgument(
            'managed', default_value='false',
            description='true: run perception_node as a managed (lifecycle) node'),
        DeclareLaunchArgument(
            'autostart', default_value='true',
            description='with managed:=true, take perception_node to active from this file '
                        '(false: leave it to a lifecycle manager)'),
    ]
    # A remap rule names one topic: the compressed sub-topic needs its own.
    camera_remap = [('/camera/image_raw', image_topic),
                    ('/camera/image_raw/compressed', [image_topic, '/compressed'])]
    managed_perception = LifecycleNode(
        package=PACKAGE, executable='perception_node', name='perception_node', namespace='',
        parameters=[params_file, {'managed': True, 'transport': transport,
                                  'backbone_path': backbone, 'profile_table': profile_table}],
        remappings=camera_remap, output='screen', condition=IfCondition(managed))
    drive = IfCondition(AndSubstitution(managed, autostart))

    def transition(transition_id, **kwargs):
        return EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(managed_perception),
            transition_id=transition_id), **kwargs)

    # configure now; activate once configure has succeeded (a failed one stays unconfigured).
    lifecycle = [
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=managed_perception, start_state='configuring',
            goal_state='inactive', entities=[transition(Transition.TRANSITION_ACTIVATE)]),
            condition=drive),
        transition(Transition.TRANSITION_CONFIGURE, condition=drive),
    ]
    nodes = [
        Node(package=PACKAGE, executable='perception_node', name='perception_node',
             parameters=[params_file, {'transport': transport, 'backbone_path': backbone,
                                       'profile_table': profile_table}],
             remappings=camera_remap, output='screen', condition=UnlessCondition(managed)),
        managed_perception,
        Node(package=PACKAGE, executable='context_node', name='context_node',
             parameters=[params_file, {'source': context_source, 'scenario': scenario}],
             output='screen'),
        Node(package=PACKAGE, executable='evolution_node', name='evolution_node',
             parameters=[params_file, {'profile_table': profile_table}], output='screen'),
    ]
    cannot_start = RegisterEventHandler(OnProcessExit(on_exit=stop_all_if_one_cannot_start))
    return LaunchDescription(arguments + nodes + lifecycle + [cannot_start])
