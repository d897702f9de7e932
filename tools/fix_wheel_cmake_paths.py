"""Rewrite the wheel builder's Python/numpy include paths baked into the ROS wheels' CMake files.

The ros-* message wheels ship ``*.cmake`` exports naming ``/opt/python/cp3XX-cp3XX/...`` include
directories of the machine that built them; CMake stops at the generate step until they name this
environment's real Python and numpy include directories. Safe to run any number of times.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy


def main() -> int:
    prefix = Path(sys.prefix)
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    numpy_pat = re.compile(
        r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/[\w/]*include"
    )
    python_pat = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
    fixed = 0
    for path in (prefix / "share").glob("*/cmake/*.cmake"):
        text = path.read_text()
        if "/opt/python/" not in text:
            continue
        new = numpy_pat.sub(np_include, text)
        new = python_pat.sub(py_include, new)
        if new != text:
            path.write_text(new)
            fixed += 1
    print(f"fix_wheel_cmake_paths: {fixed} file(s) rewritten "
          f"(python include {py_include}, numpy include {np_include})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
