"""Thin rclpy adapters around adaspring_ros.core, one file per node.

A node's own arithmetic is on small matrices (a frame's resize, materialising a variant, the
runtime search), where BLAS worker threads only add hand-offs; on a busy 2-core robot those cost
more than the work (the eigen-decomposition of a low-rank variant's 96x96 Gram matrix took
0.9 ms on one thread and 26 ms on two here). So BLAS runs on one thread in a node process
unless the environment says otherwise; the inference engines have their own thread setting
(``num_threads``). Set here, before any node module imports numpy.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
