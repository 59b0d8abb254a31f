"""Pool and journal files: atomic writes, labeled set derived from the journal."""
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoal_dist import store
from autoal_dist.run import Run, layout


def test_pool_table_ids_and_splits():
    t = layout.pool_table(np.array([1, 0, 2]), np.array([2, 2]))
    assert t.column("id").to_pylist() == [0, 1, 2, 3, 4]
    assert t.column("split").to_pylist() == ["train"] * 3 + ["test"] * 2
    assert t.column("label").to_pylist() == [1, 0, 2, 2, 2]


def test_journal_round_trip_and_labeled_set(tmp_path):
    Run.at(tmp_path).write_round(0, [5, 1, 3], "init")
    Run.at(tmp_path).write_round(1, [2, 9], "entropy", np.array([0.5, 0.25]))
    assert Run.at(tmp_path).journal_rounds() == [0, 1]
    assert Run.at(tmp_path).labeled_ids().tolist() == [1, 2, 3, 5, 9]
    j = Run.at(tmp_path).journal()
    assert j.column("strategy").to_pylist() == ["init"] * 3 + ["entropy"] * 2
    assert j.column("score").to_pylist()[3:] == [0.5, 0.25]


def test_interrupted_write_leaves_no_file_and_is_ignored(tmp_path, monkeypatch):
    Run.at(tmp_path).write_round(0, [1, 2], "init")

    def crash(table, where, **kw):
        open(where, "wb").write(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        Run.at(tmp_path).write_round(1, [3], "entropy")
    assert Run.at(tmp_path).journal_rounds() == [0]
    assert not [p for p in (tmp_path / "journal").iterdir() if p.name.startswith(".")]
    # a stray temp file from a killed process is ignored too
    (tmp_path / "journal" / ".round_001.parquet.abc.tmp").write_bytes(b"garbage")
    assert Run.at(tmp_path).labeled_ids().tolist() == [1, 2]


def test_duplicate_ids_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        Run.at(tmp_path).write_round(0, [1, 1], "init")
    Run.at(tmp_path).write_round(0, [1, 2], "init")
    Run.at(tmp_path).write_round(1, [2], "entropy")
    with pytest.raises(ValueError, match="twice"):
        Run.at(tmp_path).labeled_ids()


def test_write_atomic_replaces_whole_file(tmp_path):
    p = tmp_path / "x.txt"
    store.write_text(p, "one")
    store.write_text(p, "two")
    assert p.read_text() == "two"
    assert os.listdir(tmp_path) == ["x.txt"]
