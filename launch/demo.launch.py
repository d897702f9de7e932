"""Launch the whole pipeline on replayed labelled images with a scripted context scenario.

    ros2 launch adaspring_ros demo.launch.py scenario:=scenarios/mixed.yaml

The robot launch file plus the replay camera; the context node plays the scenario trace instead
of reading the device. (`adaspring demo` runs the same nodes with the same YAML without ROS launch
and adds the competing CPU load and the summary.)

Another model on its own images:

    ros2 launch adaspring_ros demo.launch.py backbone:=B profile_table:=T dataset_dir:=D

replays the test split of the image folder D (``D/test/<class>/``, else ``D/<class>/``) as
640x480 colour frames, labelled in the order of B's model card; without ``dataset_dir`` the
camera replays Fashion-MNIST as the YAML says.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EqualsSubstitution, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'adaspring_ros'


def generate_launch_description():
    params_file = LaunchConfiguration('params_file')
    image_topic = LaunchConfiguration('image_topic')
    backbone = LaunchConfiguration('backbone')
    dataset_dir = LaunchConfiguration('dataset_dir')
    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), 'config',
                                                'adaspring.yaml']),
            description='YAML with the ros__parameters of every node'),
        DeclareLaunchArgument(
            'image_topic', default_value='/camera/image_raw',
            description='topic the replay camera publishes and the perception node reads'),
        DeclareLaunchArgument(
            'scenario', default_value='scenarios/mixed.yaml',
            description='context scenario trace, relative to config/ or absolute'),
        DeclareLaunchArgument(
            'backbone', default_value='',
            description="backbone checkpoint the perception node serves ('' = the shipped one)"),
        DeclareLaunchArgument(
            'profile_table', default_value='',
            description="profile table measured for that backbone ('' = the shipped one)"),
        DeclareLaunchArgument(
            'dataset_dir', default_value='',
            description="the backbone's image folder, its test split replayed ('' = the "
                        "camera's YAML source, Fashion-MNIST)"),
    ]
    robot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare(PACKAGE), 'launch', 'adaspring.launch.py'])),
        launch_arguments={
            'params_file': params_file,
            'image_topic': image_topic,
            'context_source': 'scenario',
            'scenario': LaunchConfiguration('scenario'),
            'backbone': backbone,
            'profile_table': LaunchConfiguration('profile_table'),
        }.items())
    camera_remap = [('/camera/image_raw', image_topic)]
    no_folder = EqualsSubstitution(dataset_dir, '')
    cameras = [
        Node(package=PACKAGE, executable='camera_replay_node', name='camera_replay_node',
             parameters=[params_file], remappings=camera_remap, output='screen',
             condition=IfCondition(no_folder)),
        Node(package=PACKAGE, executable='camera_replay_node', name='camera_replay_node',
             parameters=[params_file, {'source': 'image_folder', 'path': dataset_dir,
                                       'backbone_path': backbone}],
             remappings=camera_remap, output='screen',
             condition=UnlessCondition(no_folder)),
    ]
    # 640x480 rgb8 frames exceed Fast DDS's default 512 KB shared-memory segment (most are lost
    # best-effort); every process launched here gets the shipped 32 MB profile.
    dds_profile = SetEnvironmentVariable(
        'FASTDDS_DEFAULT_PROFILES_FILE',
        PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'fastdds_large_images.xml']))
    return LaunchDescription(arguments + [dds_profile, robot] + cameras)
