"""Reading a backbone checkpoint without torch: the same arrays and model card as torch.load,
checked alike, and nothing in the file is ever run (no ROS)."""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from adaspring_ros.core.model import compact
from adaspring_ros.core.model.card import FASHION_MNIST_CARD, ModelCard
from adaspring_ros.core.model.checkpoint_reader import (
    load_weight_bank,
    read_checkpoint,
    write_checksum,
)
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig
from adaspring_ros.core.model.onnx_graph import onnx_graph
from adaspring_ros.core.model.weights import CheckpointError

torch = pytest.importorskip("torch")

from adaspring_ros.core.model.checkpoint import (  # noqa: E402
    backbone_checkpoint,
    load_backbone,
    save_backbone,
)
from adaspring_ros.core.model.supernet import CompactNet, build_backbone  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small backbone with per-variant BN and tuned affine, saved by the torch writer."""
    torch.manual_seed(0)
    model = build_backbone(stage_channels=(4, 8, 8))
    cid = "r20-w50d1ck100f-w50d1ck100f-w50d1ck100f"
    model.variant_bn[cid] = {"stem": torch.stack([torch.zeros(2), torch.full((2,), 3.0)])}
    model.variant_affine[cid] = {"stem": torch.ones(2, 2), "classifier": torch.arange(10.0)}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_backbone(model, path, {"note": "test", "epochs": 3})
    return path


def test_the_arrays_are_torch_load_s(saved):
    bank = load_weight_bank(saved)
    ckpt = torch.load(saved, weights_only=True)
    assert set(bank.state) == set(ckpt["state_dict"])
    for name, tensor in ckpt["state_dict"].items():
        assert bank.state[name].dtype == tensor.numpy().dtype        # float32 and int64
        assert np.array_equal(bank.state[name], tensor.numpy())
    for key in ("variant_bn", "variant_affine"):
        theirs = ckpt[key]
        ours = getattr(bank, key)
        assert {c: set(u) for c, u in ours.items()} == {c: set(u) for c, u in theirs.items()}
        assert all(np.array_equal(ours[c][u], theirs[c][u].numpy()) for c in theirs
                   for u in theirs[c])
    assert bank.meta == {"note": "test", "epochs": 3} and len(bank.sha256) == 64
    assert bank.classes == tuple(str(i) for i in range(10))
    # saved without a card: the legacy grey one, at the space's resolutions, the file's classes
    assert bank.card == load_backbone(saved).card
    assert bank.card.mean == FASHION_MNIST_CARD.mean and bank.card.classes == bank.classes


COLOUR_CARD = ModelCard(channels=3, channel_order="RGB", mean=(0.5, 0.4, 0.3),
                        std=(0.25, 0.25, 0.25), resolutions=DEFAULT_SPACE.resolutions,
                        classes=("bird", "fruit", "tool"), resize="letterbox",
                        mirror_symmetric=False, data="a test folder")


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    """A 3-channel backbone saved with its model card."""
    torch.manual_seed(1)
    model = build_backbone(stage_channels=(4, 8, 8), classes=COLOUR_CARD.classes,
                           in_channels=3).eval()
    path = tmp_path_factory.mktemp("colour") / "colour.pt"
    save_backbone(model, path, card=COLOUR_CARD)
    return model, path


def test_a_colour_backbone_serves_from_the_file_without_torch_s_loader(colour):
    model, path = colour
    bank = load_weight_bank(path)
    assert bank.card == COLOUR_CARD and bank.arch.in_channels == 3
    config = CompressionConfig.from_id("r16-w50d2sk50q-w75d1ck25f-w25d3sk100q")
    weights = compact.materialise(bank, config)
    assert weights.in_channels == 3 and weights.stem[0].weight.shape[1] == 3
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.set_active(config)
        elastic = model(x)
        torch.testing.assert_close(CompactNet.from_weights(weights)(x), elastic)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(onnx_graph(weights, batch=None),
                                   providers=["CPUExecutionProvider"])
    image, = session.get_inputs()
    assert image.shape == ["N", 3, 16, 16]       # the ONNX input is (N, in_channels, R, R)
    logits, = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(logits, elastic.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("change, message", [
    (dict(channels=1, channel_order="L", mean=(0.5,), std=(0.25,)),
     r"1 input channel\(s\), the stem's weights take 3"),
    (dict(classes=("a", "b")), "names 2 classes, the classifier has 3 outputs"),
])
def test_a_card_that_contradicts_the_weights_is_refused_by_both_readers(colour, tmp_path,
                                                                        change, message):
    model, _ = colour
    ckpt = backbone_checkpoint(model, card=COLOUR_CARD)
    ckpt["card"] = dataclasses.replace(COLOUR_CARD, **change).to_dict()
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    write_checksum(path)
    for reader in (load_weight_bank, load_backbone):
        with pytest.raises(CheckpointError, match=message):
            reader(path)


def test_a_version_1_file_gets_the_legacy_card(colour, tmp_path):
    grey = build_backbone(stage_channels=(4, 8, 8))
    ckpt = backbone_checkpoint(grey)
    ckpt["version"] = 1
    del ckpt["card"], ckpt["arch"]["in_channels"]
    path = tmp_path / "v1.pt"
    torch.save(ckpt, path)
    write_checksum(path)
    bank = load_weight_bank(path)
    assert bank.arch.in_channels == 1 and bank.card == load_backbone(path).card
    assert bank.card.channels == 1 and bank.card.resolutions == DEFAULT_SPACE.resolutions
    ckpt["version"] = 3
    torch.save(ckpt, path)
    write_checksum(path)
    with pytest.raises(CheckpointError, match="version 3 is not supported"):
        load_weight_bank(path)


def test_the_checksum_is_verified(saved, tmp_path):
    path = tmp_path / "bb.pt"
    path.write_bytes(saved.read_bytes())
    (tmp_path / "bb.pt.sha256").write_text("0" * 64 + "  bb.pt\n")
    with pytest.raises(CheckpointError, match="does not match"):
        load_weight_bank(path)
    load_weight_bank(path, verify=False)
    write_checksum(path)
    load_weight_bank(path)


def _with_pickle(saved: Path, out: Path, payload: bytes) -> Path:
    """``saved`` with its data.pkl replaced by ``payload`` (the storages stay)."""
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = payload if info.filename.endswith("data.pkl") else src.read(info)
            dst.writestr(info, data)
    return out


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_in_the_file_is_refused_never_run(saved, tmp_path):
    marker = tmp_path / "ran"
    path = _with_pickle(saved, tmp_path / "evil.pt",
                        pickle.dumps({"format": "adaspring-backbone", "x": _Exploit(marker)},
                                     protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.pt.*system"):
        read_checkpoint(path)
    assert not marker.exists()


def _hand_made(path: Path, offset: int, size: tuple, numel: int = 4) -> Path:
    """A zip in torch's layout holding one float tensor of ``size`` at ``offset`` into a
    storage of ``numel`` elements."""
    class Storage:
        pass

    class Tensor:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2,
                    (Storage(), offset, size, (1,) * len(size), False,
                     collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) \
                if isinstance(obj, Storage) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"t": Tensor()})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/data.pkl", buffer.getvalue())
        archive.writestr("x/byteorder", "little")
        archive.writestr("x/data/0", np.arange(4, dtype=np.float32).tobytes())
    return path


def test_a_tensor_outside_its_storage_is_refused(tmp_path):
    good = read_checkpoint(_hand_made(tmp_path / "good.pt", 1, (3,)))
    assert np.array_equal(good["t"], [1.0, 2.0, 3.0])
    with pytest.raises(CheckpointError, match=r"oob\.pt.*runs past its storage"):
        read_checkpoint(_hand_made(tmp_path / "oob.pt", 1_000_000, (2,)))
    with pytest.raises(CheckpointError, match=r"short\.pt.*need more"):
        read_checkpoint(_hand_made(tmp_path / "short.pt", 0, (2,), numel=1000))


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_other_files_are_refused_naming_the_file(tmp_path, content):
    path = tmp_path / "weird.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"cannot load .*weird\.pt"):
        read_checkpoint(path)


def test_a_legacy_torch_file_is_refused(tmp_path):
    path = tmp_path / "legacy.pt"
    buffer = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, buffer, _use_new_zipfile_serialization=False)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="legacy.pt"):
        read_checkpoint(path)


def test_reading_needs_no_torch(saved):
    code = ("import sys\n"
            "from adaspring_ros.core.model.checkpoint_reader import load_weight_bank\n"
            "from adaspring_ros.core.model import compact\n"
            "from adaspring_ros.core.model.config import CompressionConfig\n"
            f"bank = load_weight_bank({str(saved)!r})\n"
            "compact.materialise(bank, CompressionConfig.smallest(bank.space))\n"
            "assert bank.card.classes == bank.classes\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
