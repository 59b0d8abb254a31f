"""The regime suite's generated pools (benchmarks/pools.py) and the suite's table
(benchmarks/accuracy.py): shapes, regimes as built, ranks and paired differences."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import accuracy  # noqa: E402
import pools  # noqa: E402
from autoal_dist.data import load_dataset  # noqa: E402


def test_longtail_is_long_tailed_and_its_test_split_is_not():
    x, y, test = pools.longtail_digits()
    counts = np.bincount(y[~test], minlength=10)
    assert counts.max() / counts.min() > 20  # ratio 50, sampled
    test_counts = np.bincount(y[test], minlength=10)
    assert test_counts.max() / test_counts.min() < 2  # not thinned: as the source draws it
    assert x.shape[1] == 64 and x.dtype == np.float32


def test_dup_pool_is_near_twins_of_few_sources():
    x, y, test = pools.dup_digits()
    pool = x[~test]
    assert len(pool) == 150 * 40 and np.bincount(y[~test]).tolist() == [600] * 10
    twins = np.linalg.norm(pool[0] - pool[1])  # two copies of one source
    strangers = np.linalg.norm(pool[0] - pool[40])  # first copies of two sources
    assert twins < 0.5 * strangers


@pytest.mark.parametrize("name", sorted(pools.POOLS))
def test_every_pool_loads_as_a_parquet_dataset(tmp_path, name):
    path = pools.POOLS[name](tmp_path / f"{name}.parquet")
    data = load_dataset(f"parquet:{path}")
    camp = pools.CAMPAIGNS[name]
    assert len(data.train_y) > camp["init"] + camp["rounds"] * camp["budget"]
    assert data.num_classes == 10 and len(data.test_y) > 0


def test_suite_ranks_and_paired_differences():
    n = np.array([10, 20])
    curve = {"n": n, "seconds": np.zeros(2), "oracle_corr": [[0.5], [np.nan]]}
    res = {"a": {"margin": {**curve, "acc": np.array([[0.5, 0.9], [0.5, 0.8]])},
                 "kmeans": {**curve, "acc": np.array([[0.5, 0.7], [0.5, 0.7]])},
                 "vote": {**curve, "acc": np.array([[0.5, 0.6], [0.5, 0.6]])},
                 "autoal": {**curve, "acc": np.array([[0.5, 0.8], [0.5, 0.8]])},
                 "oracle": {**curve, "acc": np.array([[0.5, 1.0], [0.5, 1.0]])}}}
    ranks = accuracy.mean_ranks(accuracy.suite_aucs(res))
    assert ranks == {"margin": 1.0, "autoal": 2.0, "kmeans": 3.0, "vote": 4.0}  # no oracle
    assert accuracy.best_single(accuracy.suite_aucs(res)["a"]) == "margin"
    text = accuracy.suite_report(res, [0, 1])
    assert ("| a | margin | -0.0250 ± 0.0354 | 0/2 | +0.1000 ± 0.0000 | 2/2 | +0.0750 "
            "| +0.500 (1 rounds) |") in text
    assert "| oracle | (bound) | 0.7500 ± 0.0000 |" in text
