"""LocalScorer: the round's scoring pass in the driver process (execution mode `local`)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import Classifier
from autoal_dist.models.inference import compute_outputs
from autoal_dist.outputs import PoolOutputs
from autoal_dist.scoring.base import rows_of, selection_from_outputs
from autoal_dist.scoring.rows import rows_at
from autoal_dist.strategies import needs_of


@dataclass
class LocalScorer:
    x: np.ndarray  # the whole train pool (uint8 images or float features), or a StoredArray
    normalize: Normalizer
    batch_size: int = 256
    mc_samples: int = 10
    device: str = "cpu"
    show_progress: bool = True
    last: PoolOutputs | None = None  # the last pass's outputs, for `rows`

    def outputs(self, model: Classifier, positions: np.ndarray, names: list[str], seed: int,
                labeled_positions: np.ndarray | None = None,
                with_labeled: bool = False) -> PoolOutputs:
        from tqdm import tqdm

        needs = needs_of(names)
        with rows_at(self.x, positions) as rows, tqdm(  # a stored pool: batch by batch
                total=len(positions), desc="score", unit="img", leave=False,
                disable=not self.show_progress) as bar:
            out = compute_outputs(model, rows, positions, self.normalize,
                                  needs=needs | {"probs", "embeddings"},
                                  batch_size=self.batch_size, mc_samples=self.mc_samples,
                                  seed=seed, device=self.device, progress=bar.update)
        if ("labeled_embeddings" in needs or with_labeled) and labeled_positions is not None:
            lab = compute_outputs(model, self.x[labeled_positions], labeled_positions,
                                  self.normalize, batch_size=self.batch_size, device=self.device)
            out.labeled_embeddings = lab.embeddings
        return out

    def select_many(self, model, positions, names, budget, seed, labeled_positions, timings=None,
                    keep=False):
        t0 = time.perf_counter()
        self.last = None  # not two passes' outputs at once
        out = self.outputs(model, positions, names, seed, labeled_positions, with_labeled=keep)
        self.last = out if keep else None
        t1 = time.perf_counter()
        sels = {n: selection_from_outputs(out, n, budget, seed, self.batch_size, self.device)
                for n in names}
        if timings is not None:
            timings["score_s"] = timings.get("score_s", 0.0) + t1 - t0
            timings["select_s"] = timings.get("select_s", 0.0) + time.perf_counter() - t1
        return sels

    def rows(self, ids: np.ndarray) -> PoolOutputs:
        return rows_of(self._kept(), np.asarray(ids, np.int64))

    def labeled(self) -> np.ndarray:
        emb = self._kept().labeled_embeddings
        assert emb is not None  # a kept pass computes them
        return emb

    def _kept(self) -> PoolOutputs:
        if self.last is None:
            raise RuntimeError("LocalScorer: no scoring pass kept (select_many(..., "
                               "keep=True))")
        return self.last
