"""pip path for the ROS-free core (training and profiling on a workstation) and the
`adaspring` command.

On a robot the package is built with colcon (package.xml, CMakeLists.txt), which also generates the
ROS interfaces; colcon ignores this file for an ament_cmake package.
"""

from setuptools import find_packages, setup

setup(
    name="adaspring_ros",
    version="0.1.0",
    description="Runtime-adaptive DNN compression (AdaSpring) for ROS 2",
    license="Apache-2.0",
    packages=find_packages(include=["adaspring_ros", "adaspring_ros.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.1", "numpy", "psutil", "pyyaml", "tqdm", "matplotlib", "pillow"],
    extras_require={"test": ["pytest", "hypothesis", "ruff"]},
    entry_points={"console_scripts": ["adaspring = adaspring_ros.cli:main"]},
)
