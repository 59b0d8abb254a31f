"""The labels people gave (oracle `files`): `labels/round_XXX.parquet` per journaled round.

`labels/round_XXX.parquet` (id int64, label int64) holds the labels imported so far for the ids
journaled in round XXX. A round trains only once every id journaled up to it is labeled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from autoal_dist.run import Run

LABELS_DIR = "labels"
HISTORY_FILE = "history.parquet"  # in labels/: each recorded label a correction replaced

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

def labels_file(round_: int) -> str:
    return f"{LABELS_DIR}/round_{round_:03d}.parquet"


def read_labels(run: Run) -> pa.Table:
    """Every imported label (id, label), all rounds; temp files of a killed import are ignored."""
    rounds = run.rounds_in(LABELS_DIR)
    if not rounds:
        return LABELS_SCHEMA.empty_table()
    return pa.concat_tables([run.read_table(labels_file(r), schema=LABELS_SCHEMA)
                             for r in rounds])


def revealed_labels(run: Run, pool_size: int) -> np.ndarray:
    """Pool labels as people gave them: int64 [pool_size], UNLABELED where none was imported."""
    y = np.full(pool_size, UNLABELED, np.int64)
    t = read_labels(run)
    y[t.column("id").to_numpy()] = t.column("label").to_numpy()
    return y


def progress(run: Run) -> list[RoundLabels]:
    """Labeling progress of every journaled round, ascending."""
    journal = run.journal()
    ids, rounds = journal.column("id").to_numpy(), journal.column("round").to_numpy()
    done = np.isin(ids, read_labels(run).column("id").to_numpy())
    return [RoundLabels(int(r), int((rounds == r).sum()), int(done[rounds == r].sum()))
            for r in run.journal_rounds()]


def awaiting_round(run: Run) -> int | None:
    """The first journaled round whose batch is not fully labeled; None when all are."""
    return next((p.round for p in progress(run) if not p.complete), None)


def awaiting_labels(run: Run, oracle: str, rounds: int) -> int | None:
    """Oracle files: the round whose batch people must finish labeling before the campaign's
    next round can train, else None. Reads files only, so `run` stops on an incomplete batch
    without starting Ray or building a scorer."""
    if oracle != "files":
        return None
    awaiting = awaiting_round(run)
    next_round = len(run.completed_rows(rounds))
    if awaiting is None or next_round > rounds or awaiting > next_round:
        return None
    return awaiting
