"""Where the package's data files are: shipped models, config/ YAML, launch/.

Looked up in this order: $ADASPRING_SHARE_DIR, the source checkout this module lives in, the
ament index (a ROS install), then <prefix>/share/adaspring_ros (a venv built with
colcon --merge-install).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["share_dir", "models_dir", "config_dir", "default_backbone", "default_profile_table"]


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("ADASPRING_SHARE_DIR")
    if env:
        out.append(Path(env))
    out.append(Path(__file__).resolve().parents[2])  # source checkout: adaspring_ros/core/..
    try:
        from ament_index_python.packages import get_package_share_directory

        out.append(Path(get_package_share_directory("adaspring_ros")))
    except Exception:  # not a ROS install, or the package is not in the index
        pass
    out.append(Path(sys.prefix) / "share" / "adaspring_ros")
    return out


def share_dir() -> Path:
    """The first candidate that holds config/ (the package's data root)."""
    for path in _candidates():
        if (path / "config").is_dir():
            return path
    raise FileNotFoundError(
        "adaspring_ros data files (config/, models/) not found; set ADASPRING_SHARE_DIR"
    )


def models_dir() -> Path:
    return share_dir() / "models"


def config_dir() -> Path:
    return share_dir() / "config"


def default_backbone() -> Path:
    return models_dir() / "backbone.pt"


def default_profile_table(engine: str = "onnxruntime") -> Path:
    """The shipped table of ``engine``: models/profile_table.json for the default engine (ONNX
    Runtime), models/profile_table_<engine>.json for another (latencies are per engine)."""
    name = "profile_table.json" if engine == "onnxruntime" else f"profile_table_{engine}.json"
    return models_dir() / name
