"""core.serving.server: the served variant (built and warmed up off the frame path, swapped
whole), the variant cache and the frozen heap."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from elastic_backbone import every_stage, tiny_backbone

from adaspring_ros.core.model.card import FASHION_MNIST_CARD
from adaspring_ros.core.model.config import (
    CompressionConfig,
    ConfigError,
    SearchSpace,
)
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.supernet import build_backbone
from adaspring_ros.core.serving.server import (
    VariantCache,
    VariantServer,
    freeze_heap,
    parse_config,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    backbone = build_backbone(stage_channels=(4, 8, 8)).eval()
    return VariantServer(backbone.materialise, make_engine("torch"), None, capacity=2,
                         initial=CompressionConfig.full(backbone.space),
                         card=FASHION_MNIST_CARD)


@pytest.mark.parametrize("space", [SearchSpace(), SearchSpace(num_stages=2, widths=(0.5, 1.0),
                                                              resolutions=(32, 40, 48))])
def test_parse_config_names_and_ids_of_the_space_given(space):
    assert parse_config("full", space) == CompressionConfig.full(space)
    assert parse_config("smallest", space) == CompressionConfig.smallest(space)
    assert parse_config(CompressionConfig.smallest(space).id, space) == \
        CompressionConfig.smallest(space)
    with pytest.raises(ConfigError):
        parse_config("toaster", space)
    other = SearchSpace(resolutions=(20,)) if space.num_stages == 2 else \
        SearchSpace(num_stages=2, widths=(0.5, 1.0), resolutions=(32, 40, 48))
    with pytest.raises(ConfigError):  # a variant of another space
        parse_config(CompressionConfig.full(other).id, space)


def test_swap_replaces_the_pair_whole_and_reports_what_it_did(server):
    full, small = CompressionConfig.full(), CompressionConfig.smallest()
    before = server.active
    assert before[0] == full and full in server.cache  # built and warmed up at start
    assert server.swap(small) == (True, False)  # swapped, built
    assert server.active[0] == small and server.active is not before
    assert before[0] == full  # a frame holding the old pair still has the old variant
    assert server.swap(small) == (False, True)  # already serving
    assert server.swap(full) == (True, True)  # back, from the cache


def test_a_failing_build_leaves_the_served_variant(server, monkeypatch):
    served = server.active
    assert served[0] == CompressionConfig.full()

    def no_room(config):
        raise MemoryError("no room")

    monkeypatch.setattr(server.cache, "build", no_room)
    server.cache.clear()
    with pytest.raises(MemoryError):
        server.swap(CompressionConfig.smallest())
    assert server.active is served


def test_set_threads_follows_the_parameter(server):
    server.set_threads(2)
    assert server.threads == 2 and torch.get_num_threads() == 2
    server.set_threads(1)
    assert server.threads == 1 and torch.get_num_threads() == 1


def test_evicted_variants_give_their_memory_back_once(server, monkeypatch):
    from adaspring_ros.core.serving import server as module

    released, real = [], module.release_free_memory
    monkeypatch.setattr(module, "release_free_memory", lambda: released.append(1))
    server.release_evicted()                               # whatever happened before
    released.clear()
    evictions = server.cache.evictions
    assert not server.release_evicted() and not released  # nothing evicted since
    full = CompressionConfig.full()
    for width in (0.5, 0.75, 0.25):                        # capacity 2: two get evicted
        server.swap(CompressionConfig.from_id(full.id.replace("w100d3", f"w{int(width * 100)}d3",
                                                                1)))
    assert server.cache.evictions > evictions
    assert server.release_evicted() and released == [1]
    assert not server.release_evicted() and released == [1]
    real()                                                 # and the real one runs here


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()



def test_variant_cache_returns_the_built_variant_until_evicted(backbone):
    # Times are for bench/bench_engines.py: a loaded CI machine makes wall-clock asserts flaky.
    config = every_stage(width=0.5, rank=0.5, int8=True)
    built = []
    cache = VariantCache(lambda c: built.append(c.id) or backbone.materialise(c), capacity=2)
    a, b = cache.get(config), cache.get(CompressionConfig.full())
    for _ in range(100):
        assert cache.get(config) is a and cache.get(CompressionConfig.full()) is b
    assert len(built) == 2
    cache.get(every_stage(depth=1))                         # LRU evicts the least recently used
    assert len(cache) == 2 and config not in cache


def test_freeze_heap_moves_live_objects_out_of_the_collector():
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 1000    # torch alone leaves many thousands
        assert len(gc.get_objects()) < gc.get_freeze_count()
    finally:
        gc.unfreeze()


FRAME_LOOP = """
import resource, sys
from types import SimpleNamespace
import numpy as np
from adaspring_ros.core.data.transforms import preprocess_frame
from adaspring_ros.core.serving.server import reuse_frame_memory
if sys.argv[1] == "reuse":
    assert reuse_frame_memory()
frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
COLOUR = SimpleNamespace(channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, resize="centre_crop",
                         interpolation="bilinear")
def one_frame():
    pixels = np.frombuffer(bytearray(frame.tobytes()), np.uint8).reshape(frame.shape)
    kept = [bytearray(3 * 2**20)]  # the rest of a callback's buffers (message copies)
    preprocess_frame(pixels, 64, COLOUR)
    del kept
for _ in range(5):
    one_frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    one_frame()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_frame_buffers_are_reused_rather_than_faulted_in_again():
    def faults_per_frame(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", FRAME_LOOP, mode], capture_output=True,
                             text=True, timeout=120, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr
        return float(out.stdout.strip())

    default, reused = faults_per_frame("default"), faults_per_frame("reuse")
    # A 640x480 colour frame's buffers span ~1,600 pages, faulted in again for every frame by
    # glibc's defaults; kept for reuse, none.
    assert default > 500 and reused < 20, (default, reused)
