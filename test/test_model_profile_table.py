"""load_profile_table (model.profile_table): the shipped or a given table, and every failure a
ProfileError that names the path."""

from __future__ import annotations

import pytest

from adaspring_ros.core import paths
from adaspring_ros.core.model import profile_table
from adaspring_ros.core.model.profile_table import ProfileError, load_profile_table
from tools.synthetic_tables import synthetic_table


def test_the_shipped_table_of_each_engine_loads():
    for engine in ("onnxruntime", "torch"):
        table = load_profile_table(None, engine)
        assert len(table) > 100 and table.engine_name == engine
    assert len(load_profile_table("", "onnxruntime")) == len(load_profile_table())


def test_a_given_table_loads_and_a_missing_or_broken_one_names_its_path(tmp_path):
    given = tmp_path / "table.json"
    synthetic_table(20).save(given)
    assert len(load_profile_table(given)) == 20
    missing = tmp_path / "none.json"
    with pytest.raises(ProfileError, match=f"cannot read profile table {missing}"):
        load_profile_table(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1, "space": {}, "entries": []}')
    with pytest.raises(ProfileError, match=f"profile table {broken}: "):
        load_profile_table(broken)


def test_a_missing_shipped_table_is_an_error_never_a_stand_in(monkeypatch, tmp_path):
    gone = tmp_path / "profile_table.json"
    monkeypatch.setattr(profile_table, "default_profile_table", lambda engine: gone)
    with pytest.raises(ProfileError, match=f"no shipped profile table of engine 'onnxruntime' "
                                           f"at {gone}: measure one"):
        load_profile_table()

    def nowhere(engine: str):
        raise FileNotFoundError("adaspring_ros data files (config/, models/) not found")

    monkeypatch.setattr(profile_table, "default_profile_table", nowhere)
    with pytest.raises(ProfileError, match="no shipped profile table of engine 'torch': "
                                           "adaspring_ros data files"):
        load_profile_table(None, "torch")
    assert paths.default_profile_table("torch").name == "profile_table_torch.json"
