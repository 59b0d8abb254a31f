"""check_journal: every kind of damage is one line naming the file or round; every state the
program leaves (an interrupted run included) passes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoal_dist import store
from autoal_dist.run import JournalError, Run, layout

POOL, TEST, INIT, BUDGET = 300, 40, 20, 10
METRICS = pa.schema([("round", pa.int32()), ("n_labeled", pa.int64()),
                     ("accuracy", pa.float64()), ("strategy", pa.string())])


def write_metrics(run: Path, through: int, n_labeled=None) -> None:
    rows = [{"round": r, "n_labeled": INIT + BUDGET * r if n_labeled is None else n_labeled[r],
             "accuracy": 0.5, "strategy": "margin"} for r in range(through + 1)]
    pq.write_table(pa.Table.from_pylist(rows, schema=METRICS), run / "metrics.parquet")


def make_run(run: Path, rounds: int = 3, metrics_through: int | None = None,
             batch: int = BUDGET) -> Path:
    """A sound run: pool, config, journal rounds 0..rounds, metrics through metrics_through."""
    run.mkdir(parents=True, exist_ok=True)
    store.write_json(run / "config.json", {"config": {"init": INIT, "budget": batch}})
    y = np.arange(POOL + TEST) % 3
    store.write_table(run / "pool.parquet", layout.pool_table(y[:POOL], y[POOL:]))
    order = np.random.default_rng(0).permutation(POOL)
    Run.at(run).write_round(0, np.sort(order[:INIT]), "init")
    for r in range(1, rounds + 1):
        lo = INIT + batch * (r - 1)
        Run.at(run).write_round(r, order[lo:lo + batch], "margin", np.linspace(1, 0, batch))
    through = rounds if metrics_through is None else metrics_through
    if through >= 0:
        write_metrics(run, through, [INIT + batch * r for r in range(through + 1)])
    return run


def refused(run: Path, *words: str, pool_size: int | None = None) -> str:
    with pytest.raises(JournalError) as e:
        Run.at(run).check(pool_size)
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, ValueError)
    for w in words:
        assert w in msg, (w, msg)
    return msg


def journal_file(run: Path, r: int) -> Path:
    return Run.at(run).round_path(r)


def rewrite(path: Path, **columns) -> None:
    t = pq.read_table(path)
    for name, values in columns.items():
        t = t.set_column(t.schema.get_field_index(name), name,
                         pa.array(values, type=t.schema.field(name).type))
    pq.write_table(t, path)


# ---- sound states ---------------------------------------------------------------------------

@pytest.mark.parametrize("rounds, metrics_through", [
    (3, 3),    # finished
    (3, 2),    # stopped for labels after journaling round 3 / final row dropped by --relabel
    (4, 2),    # killed between journaling round 4 and writing metrics row 3
    (0, -1),   # killed after the seed set, before round 0's metrics
    (1, -1),   # killed after journaling round 1, before the first metrics row
])
def test_states_the_program_leaves_pass(tmp_path, rounds, metrics_through):
    run = make_run(tmp_path / "run", rounds, metrics_through)
    (run / "journal" / ".round_005.parquet.x1y2.tmp").write_bytes(b"garbage of a killed write")
    (run / "journal" / ".nfs000000000001").write_bytes(b"NFS silly rename")
    (run / ".lock").write_text("{}")
    Run.at(run).check()
    Run.at(run).check(pool_size=POOL)


def test_an_empty_or_new_directory_passes(tmp_path):
    Run.at(tmp_path / "nothing-here").check()
    (tmp_path / "empty").mkdir()
    Run.at(tmp_path / "empty").check()


def test_labels_of_journaled_rounds_pass(tmp_path):
    run = make_run(tmp_path / "run", rounds=2, metrics_through=1)
    labels = run / "labels"
    for r in (0, 1, 2):
        ids = np.sort(pq.read_table(journal_file(run, r)).column("id").to_numpy())[:5]
        store.write_table(labels / f"round_{r:03d}.parquet", pa.table(
            {"id": pa.array(ids, pa.int64()), "label": pa.array(ids % 3, pa.int64())}))
    pq.write_table(pa.table({"id": pa.array([1], pa.int64())}), labels / "history.parquet")
    Run.at(run).check()


@pytest.mark.slow
def test_a_real_run_killed_between_journal_and_metrics_passes(tmp_path):
    """campaign.py's own files: killed right after journaling round 2, before metrics row 1."""
    config = tmp_path / "fast.yaml"
    config.write_text("train: {min_steps: 5}\nscore: {mc_samples: 2}\n")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "AUTOAL_DIST_CRASH_AT": "post_rename:round_002.parquet"}
    p = subprocess.run([sys.executable, "-m", "autoal_dist", "run", "--local", "--quiet",
                        "--dataset", "digits", "--strategy", "margin", "--init", "20",
                        "--budget", "10", "--rounds", "3", "--epochs", "1", "--config",
                        str(config), "--out", str(out)], check=False, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode != 0, p.stderr
    assert Run.at(out).journal_rounds() == [0, 1, 2], p.stderr
    assert pq.read_table(out / "metrics.parquet").column("round").to_pylist() == [0]
    Run.at(out).check()


# ---- journal file names and rounds ----------------------------------------------------------

def test_a_second_file_for_one_round_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "journal" / "round_0001.parquet").write_bytes(journal_file(run, 1).read_bytes())
    refused(run, "journal/round_0001.parquet", "second file for round 1", "round_001.parquet")


def test_a_non_canonical_round_name_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    journal_file(run, 3).rename(run / "journal" / "round_3.parquet")
    refused(run, "journal/round_3.parquet", "not a canonical", "round_003.parquet")


def test_a_stray_file_in_the_journal_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "journal" / "notes.txt").write_text("hi")
    refused(run, "journal/notes.txt", "unexpected file")


def test_a_missing_round_is_refused(tmp_path):
    run = make_run(tmp_path / "run", rounds=4, metrics_through=1)
    journal_file(run, 2).unlink()
    refused(run, "round 2 is missing", "round_002.parquet", "reaches round 4")


def test_a_journal_without_round_0_is_refused(tmp_path):
    run = make_run(tmp_path / "run", rounds=1, metrics_through=-1)
    journal_file(run, 0).unlink()
    refused(run, "round 0 is missing")


# ---- journal contents -----------------------------------------------------------------------

def test_an_id_twice_in_one_round_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    ids = pq.read_table(journal_file(run, 2)).column("id").to_pylist()
    rewrite(journal_file(run, 2), id=[ids[0]] + ids[:-1])
    refused(run, "round_002.parquet", f"id {ids[0]} is journaled 2 times in round 2")


def test_an_id_in_two_rounds_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    first = pq.read_table(journal_file(run, 1)).column("id").to_pylist()
    ids = pq.read_table(journal_file(run, 3)).column("id").to_pylist()
    rewrite(journal_file(run, 3), id=[first[4]] + ids[1:])
    refused(run, "round_003.parquet", f"id {first[4]}", "round 1 and again in round 3")


@pytest.mark.parametrize("bad", [POOL, POOL + TEST - 1, -1])
def test_an_id_outside_the_pool_is_refused(tmp_path, bad):
    """ids POOL.. are the test split: never queried."""
    run = make_run(tmp_path / "run")
    ids = pq.read_table(journal_file(run, 2)).column("id").to_pylist()
    rewrite(journal_file(run, 2), id=[bad] + ids[1:])
    refused(run, "round_002.parquet", f"id {bad} is not a pool id", f"0..{POOL - 1}")
    if bad >= 0:
        refused(run, "round_002.parquet", f"id {bad}", pool_size=POOL)


def test_a_different_schema_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    t = pq.read_table(journal_file(run, 1))
    pq.write_table(t.cast(pa.schema([("id", pa.int32()), *list(t.schema)[1:]])),
                   journal_file(run, 1))
    refused(run, "round_001.parquet", "schema", "id: int32", "id: int64")
    pq.write_table(t.drop_columns(["score"]), journal_file(run, 1))
    refused(run, "round_001.parquet", "schema")


def test_rows_of_another_round_are_refused(tmp_path):
    run = make_run(tmp_path / "run")
    rewrite(journal_file(run, 2), round=[3] * BUDGET)
    refused(run, "round_002.parquet", "rows of round 3, not 2")


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_corrupt_round_file_is_one_line_naming_it(tmp_path, damage):
    run = make_run(tmp_path / "run")
    path = journal_file(run, 2)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "garbage": b"PAR1" + os.urandom(200) + b"PAR1"}[damage])
    refused(run, "journal/round_002.parquet", "not a readable parquet file")


def test_a_missing_or_corrupt_pool_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "pool.parquet").write_bytes(b"not parquet")
    refused(run, "pool.parquet", "not a readable parquet file")
    (run / "pool.parquet").unlink()
    refused(run, "pool.parquet", "missing")
    Run.at(run).check(pool_size=POOL)  # given explicitly, pool.parquet is not needed


def test_a_corrupt_config_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "config.json").write_text('{"config": {"init"')
    refused(run, "config.json", "not readable JSON")


# ---- metrics --------------------------------------------------------------------------------

def test_metrics_with_the_wrong_count_are_refused(tmp_path):
    run = make_run(tmp_path / "run", rounds=3)
    write_metrics(run, 3, [INIT, INIT + BUDGET, INIT + BUDGET + 1, INIT + 3 * BUDGET])
    refused(run, "metrics.parquet", f"round 2 trained on {INIT + BUDGET + 1}",
            f"rounds 0..2 hold {INIT + 2 * BUDGET}")


def test_metrics_rounds_out_of_order_are_refused(tmp_path):
    run = make_run(tmp_path / "run", rounds=3)
    t = pq.read_table(run / "metrics.parquet")
    pq.write_table(t.take([0, 2, 1, 3]), run / "metrics.parquet")
    refused(run, "metrics.parquet", "row 1 is round 2, expected 1")
    pq.write_table(t.take([1, 2, 3]), run / "metrics.parquet")
    refused(run, "metrics.parquet", "row 0 is round 1")


def test_metrics_ahead_of_the_journal_are_refused(tmp_path):
    """A metrics row for round 3 with no round 3 in the journal: a journal file was lost."""
    run = make_run(tmp_path / "run", rounds=3)
    journal_file(run, 3).unlink()
    refused(run, "metrics.parquet", "round 3", "reaches only round 2", "round_003.parquet")


def test_metrics_lagging_more_than_a_crash_leaves_are_refused(tmp_path):
    """An older metrics.parquet over a newer one (a stale second writer): 3 rounds behind."""
    run = make_run(tmp_path / "run", rounds=4, metrics_through=0)
    refused(run, "metrics.parquet", "ends at round 0", "reaches round 4")
    (run / "metrics.parquet").unlink()
    refused(run, "metrics.parquet", "missing", "reaches round 4")


def test_corrupt_metrics_are_one_line(tmp_path):
    run = make_run(tmp_path / "run")
    data = (run / "metrics.parquet").read_bytes()
    (run / "metrics.parquet").write_bytes(data[:-9])
    refused(run, "metrics.parquet", "not a readable parquet file")


# ---- labels/ --------------------------------------------------------------------------------

def write_labels(run: Path, r: int, ids) -> Path:
    path = run / "labels" / f"round_{r:03d}.parquet"
    store.write_table(path, pa.table({"id": pa.array(ids, pa.int64()),
                                      "label": pa.array([0] * len(ids), pa.int64())}))
    return path


def test_labels_for_ids_the_round_did_not_journal_are_refused(tmp_path):
    run = make_run(tmp_path / "run", rounds=2, metrics_through=1)
    ids1 = pq.read_table(journal_file(run, 1)).column("id").to_pylist()
    ids2 = pq.read_table(journal_file(run, 2)).column("id").to_pylist()
    write_labels(run, 1, sorted([ids1[0], ids2[0]]))
    refused(run, "labels/round_001.parquet", f"id {ids2[0]}", "not journaled in round 1")


def test_labels_of_an_unjournaled_round_twice_or_misnamed_are_refused(tmp_path):
    run = make_run(tmp_path / "run", rounds=2, metrics_through=1)
    ids = pq.read_table(journal_file(run, 0)).column("id").to_pylist()
    path = write_labels(run, 3, [1])
    refused(run, "labels/round_003.parquet", "round 3", "journaled rounds: 0..2")
    path.unlink()
    path = write_labels(run, 0, [ids[0], ids[0]])
    refused(run, "labels/round_000.parquet", f"id {ids[0]} is labeled twice")
    path.rename(run / "labels" / "round_00.parquet")
    refused(run, "labels/round_00.parquet", "not a canonical")
    (run / "labels" / "round_00.parquet").unlink()
    (run / "labels" / "history.parquet").write_bytes(b"PAR1")
    refused(run, "labels/history.parquet", "not a readable parquet file")


# ---- speed ----------------------------------------------------------------------------------

def test_100_rounds_check_fast(tmp_path):
    run = tmp_path / "run"
    (run / "journal").mkdir(parents=True)
    y = np.zeros(20_000, np.int64)
    store.write_table(run / "pool.parquet", layout.pool_table(y, y[:100]))
    order = np.random.default_rng(1).permutation(20_000)
    for r in range(101):
        pq.write_table(pa.table({"id": pa.array(order[r * 100:(r + 1) * 100], pa.int64()),
                                 "round": pa.array([r] * 100, pa.int32()),
                                 "strategy": ["margin"] * 100,
                                 "score": np.zeros(100)}), Run.at(run).round_path(r))
    pq.write_table(pa.Table.from_pylist(
        [{"round": r, "n_labeled": 100 * (r + 1), "accuracy": 0.5, "strategy": "margin"}
         for r in range(100)], schema=METRICS), run / "metrics.parquet")
    Run.at(run).check()  # warm imports
    t0 = time.perf_counter()
    Run.at(run).check()
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed
