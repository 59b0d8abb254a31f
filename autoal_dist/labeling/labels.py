"""The labels people gave (oracle `files`): `labels/round_XXX.parquet` per journaled round.

`labels/round_XXX.parquet` (id int64, label int64) holds the labels imported so far for the ids
journaled in round XXX. A round trains only once every id journaled up to it is labeled.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoal_dist import rundir, store
from autoal_dist.rundir import LABELS_DIR

LABELS_SCHEMA = pa.schema([("id", pa.int64()), ("label", pa.int64())])
UNLABELED = -1  # train_y of a pool sample nobody labeled: loud if it ever reaches a loss


@dataclass(frozen=True)
class RoundLabels:
    """How much of one journaled batch people have labeled."""

    round: int
    batch: int
    labeled: int

    @property
    def complete(self) -> bool:
        return self.labeled == self.batch


# ---- the labels store ---------------------------------------------------------------

def read_labels(run_dir: Path) -> pa.Table:
    """Every imported label (id, label), all rounds; temp files of a killed import are ignored."""
    d = Path(run_dir) / LABELS_DIR
    rounds = store.rounds_in(d)
    if not rounds:
        return LABELS_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(store.round_path(d, r), schema=LABELS_SCHEMA)
                             for r in rounds])


def revealed_labels(run_dir: Path, pool_size: int) -> np.ndarray:
    """Pool labels as people gave them: int64 [pool_size], UNLABELED where none was imported."""
    y = np.full(pool_size, UNLABELED, np.int64)
    t = read_labels(run_dir)
    y[t.column("id").to_numpy()] = t.column("label").to_numpy()
    return y


def progress(run_dir: Path) -> list[RoundLabels]:
    """Labeling progress of every journaled round, ascending."""
    journal = rundir.read_journal(run_dir)
    ids, rounds = journal.column("id").to_numpy(), journal.column("round").to_numpy()
    done = np.isin(ids, read_labels(run_dir).column("id").to_numpy())
    return [RoundLabels(int(r), int((rounds == r).sum()), int(done[rounds == r].sum()))
            for r in rundir.journal_rounds(run_dir)]


def awaiting_round(run_dir: Path) -> int | None:
    """The first journaled round whose batch is not fully labeled; None when all are."""
    return next((p.round for p in progress(run_dir) if not p.complete), None)
