"""Which model `adaspring demo` runs (demo/model.py), without ROS: the shipped default, a user's
backbone with its table and images, models/NAME/, and each mismatch refused with one line before
any node starts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from colour_model import CARD, ROWS, SPACE, write_colour_model, write_image_folder

from adaspring_ros.core import paths
from adaspring_ros.core.data.datasets import DataError
from adaspring_ros.core.model.profile_table import ProfileError
from adaspring_ros.demo.model import describe_task, resolve_model


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_model")
    backbone, table = write_colour_model(root / "model")
    return str(backbone), str(table), str(write_image_folder(root / "task"))


def test_the_default_is_the_shipped_model_on_fashion_mnist():
    if not paths.default_backbone().is_file():
        pytest.skip("no shipped backbone in this checkout")
    model = resolve_model()
    assert model.camera_params() == {} and model.dataset_dir is None
    assert model.perception_params() == model.evolution_params() == {}  # the YAML's, unchanged
    assert describe_task(model.card).startswith("10 classes (T-shirt/top, Trouser,")
    assert "1 channel(s), grey; 16/20/24/28 px, centre crop" in describe_task(model.card)


def test_a_users_model_runs_on_its_own_images(colour):
    backbone, table, images = colour
    model = resolve_model(backbone=backbone, table=table, dataset_dir=images)
    assert model.card == CARD and model.images == 7
    assert model.camera_params() == {"source": "image_folder", "path": images,
                                     "backbone_path": backbone}
    assert model.evolution_params() == {"profile_table": table}
    assert describe_task(model.card).startswith(
        "3 classes (apple, bus, cat); 3 channel(s), colour (RGB); 32/40/48 px, letterbox")
    assert model.to_dict()["card"]["channels"] == 3


def test_a_named_model_resolves_under_models(colour, tmp_path, monkeypatch):
    import shutil

    backbone, table, images = colour
    named = tmp_path / "models" / "fruit"
    named.mkdir(parents=True)
    for source, name in ((backbone, "backbone.pt"), (table, "profile_table.json")):
        shutil.copy(source, named / name)
    shutil.copy(f"{backbone}.sha256", named / "backbone.pt.sha256")
    (named / "data").symlink_to(images)
    monkeypatch.setattr(paths, "models_dir", lambda: tmp_path / "models")
    model = resolve_model("fruit")
    assert model.backbone == str(named / "backbone.pt") and model.images == 7
    with pytest.raises(ValueError, match="no model 'veg'.*models there: fruit"):
        resolve_model("veg")
    with pytest.raises(ValueError, match="leave out --backbone"):
        resolve_model("fruit", backbone=backbone)


def test_what_does_not_fit_is_refused_with_one_line(colour, tmp_path):
    from tools.synthetic_tables import table_from_rows

    backbone, table, images = colour
    with pytest.raises(ValueError, match="--backbone needs --table"):
        resolve_model(backbone=backbone, dataset_dir=images)
    with pytest.raises(ValueError, match="not Fashion-MNIST.*--dataset-dir"):
        resolve_model(backbone=backbone, table=table)
    grey = tmp_path / "grey.json"
    table_from_rows(ROWS, SPACE).save(grey)
    with pytest.raises(ProfileError, match="grey.json: .*another model card"):
        resolve_model(backbone=backbone, table=str(grey), dataset_dir=images)
    others = write_image_folder(tmp_path / "others", ("apple", "kiwi"))
    with pytest.raises(DataError, match=r"\['kiwi'\] are not among"):
        resolve_model(backbone=backbone, table=table, dataset_dir=str(others))
    mirrored = replace(CARD, mirror_symmetric=False)      # another card, same weights
    other_backbone, _ = write_colour_model(tmp_path / "other", mirrored)
    with pytest.raises(ProfileError, match="mirror_symmetric: table True, backbone False"):
        resolve_model(backbone=str(other_backbone), table=table, dataset_dir=images)
