"""The round loop: train -> evaluate -> score -> select -> label (journal), resumable.

Round r trains on the labeled set of journal rounds 0..r, evaluates, and (if
r < rounds) queries round r+1's batch. Each step's result is durable before the
next starts, so a campaign resumes from whatever its files say, exactly.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from autoal_dist import labeling
from autoal_dist.config import Config, check_against_data
from autoal_dist.data import Dataset, load_dataset
from autoal_dist.data.transforms import Normalizer, wants_augmentation
from autoal_dist.execution import Execution, Local
from autoal_dist.faults import crashpoint
from autoal_dist.models.backbones import Classifier, ModelSpec, check_model
from autoal_dist.models.inference import predict
from autoal_dist.policies import policy_for
from autoal_dist.progress import Progress
from autoal_dist.rounds import RoundContext
from autoal_dist.run import Run
from autoal_dist.run.layout import metrics_row
from autoal_dist.scoring import Scorer
from autoal_dist.seeds import derive, hashed_uniform
from autoal_dist.strategies import top_b
from autoal_dist.training.loop import num_steps


def initial_ids(pool_size: int, n: int, seed: int) -> np.ndarray:
    """The seed set: n ids uniformly at random, as a pure function of the seed."""
    ids = np.arange(pool_size, dtype=np.int64)
    return np.sort(top_b(ids, hashed_uniform(ids, seed), n))


class Campaign:
    def __init__(self, cfg: Config, run: Run, data: Dataset, *,
                 execution: Execution = Local(), scorer: Scorer | None = None,
                 show_progress: bool = True):
        """`execution` chooses where scoring and training run (execution.py); `scorer`
        replaces its scorer (benchmarks, tests)."""
        self.cfg, self.directory, self.data = cfg, run, data
        self.device = "cuda" if cfg.gpu and torch.cuda.is_available() else "cpu"
        self.normalize = Normalizer.for_dataset(data)  # a stored pool's: recorded, no pass
        self.show_progress = show_progress
        self.awaiting: int | None = None  # oracle files: the round whose batch awaits labels
        self.spec = ModelSpec.resolve(cfg.model, data.input_shape, data.num_classes,
                                      cfg.train.dropout, cfg.pretrained)
        self.execution = execution
        # in-process steps draw tqdm bars; steps on Ray say what they do instead
        self.progress = Progress(show_progress and execution.name != "local")
        self.fitter = execution.fitter(cfg, run)
        self.scorer = scorer or execution.scorer(cfg, data, self.normalize, self.spec,
                                                 self.device, show_progress)

    def close(self) -> None:
        """Stop the scorer's actors (a campaign inside a long-lived process must not leak them)."""
        close = getattr(self.scorer, "close", None)
        if close is not None:
            close()

    # ---- phases ---------------------------------------------------------------------
    def train(self, labeled: np.ndarray, round_: int) -> Classifier:
        """Fit a fresh classifier on the labeled set (seeded by campaign seed and round)."""
        return self.fit(labeled, derive(self.cfg.seed, round_, "train"), f"round{round_:03d}",
                        f"train r{round_}", round_)

    def fit(self, ids: np.ndarray, seed: int, name: str, desc: str | None = None,
            round_: int = -1, *, min_steps: int | None = None) -> Classifier:
        """A fresh classifier trained on pool rows `ids` with the run's recipe, where the run
        trains (in this process or on Ray Train): the round's model, or a policy's own
        (AutoAL's f_B, whose step floor is `min_steps`)."""
        from tqdm import tqdm

        t = self.cfg.train if min_steps is None else dataclasses.replace(
            self.cfg.train, min_steps=min_steps)
        x, y = self.data.train_x[ids], self.data.train_y[ids]
        use_augment = wants_augmentation(t.augment, self.data.input_shape)
        with tqdm(total=num_steps(len(x), t), desc=desc or name, leave=False,
                  disable=not self.show_progress or desc is None) as bar:

            def progress(step: int, loss: float) -> None:  # steps taken in this process
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if round_ >= 0:
                    crashpoint("train_step", round_)

            return self.fitter.classifier(self.spec, x, y, self.normalize, t, seed, use_augment,
                                          name, self.device, progress)

    def evaluate(self, model: Classifier) -> float:
        pred = predict(model, self.data.test_x, self.normalize, self.cfg.train.eval_batch_size,
                       self.device)
        return float((pred == self.data.test_y).mean())

    def reveal_labels(self, round_: int) -> bool:
        """Oracle files: train on the labels people imported, never the dataset's.

        False (and `self.awaiting` set) while a batch journaled in rounds 0..round_ still
        lacks labels: the campaign stops there until `autoal-dist import` supplies them.
        """
        awaiting = labeling.awaiting_round(self.directory)
        if awaiting is not None and awaiting <= round_:
            self.awaiting = awaiting
            return False
        self.data = dataclasses.replace(
            self.data, train_y=labeling.revealed_labels(self.directory, len(self.data.train_y)))
        return True

    # ---- the loop -------------------------------------------------------------------
    def run(self, on_round: Callable[[dict], None] | None = None) -> list[dict]:
        """Run the remaining rounds; `on_round(row)` follows each durable metrics row
        (a Tune trial reports it, so ASHA can stop the campaign between rounds)."""
        cfg = self.cfg
        n_pool = len(self.data.train_y)
        run = self.directory
        run.remove_stale_training()  # a killed round's Ray Train run
        start_journal(cfg, run, n_pool)
        rows = run.completed_rows(cfg.rounds)
        policy = policy_for(cfg.strategy)
        for r in range(len(rows), cfg.rounds + 1):
            if cfg.oracle == "files" and not self.reveal_labels(r):
                break
            labeled = run.labeled_through(r)
            t0 = time.perf_counter()
            with self.progress.phase(f"round {r}: training on {len(labeled)} labeled samples "
                                     f"({self.fitter.describe()})", f"round {r}: trained"):
                model = self.train(labeled, r)
            crashpoint("trained", r)
            t1 = time.perf_counter()
            acc = self.evaluate(model)
            crashpoint("evaluated", r)
            t2 = time.perf_counter()
            ctx = RoundContext(cfg, self.data, self.normalize, model, self.scorer, r, labeled,
                               np.setdiff1d(np.arange(n_pool), labeled), self.device, run,
                               fitter=self.fitter, progress=self.progress, fit=self.fit)
            if r < cfg.rounds and (r + 1) not in run.journal_rounds():
                with self.progress.phase(f"round {r}: choosing {cfg.budget} of "
                                         f"{len(ctx.unlabeled)} samples ({cfg.strategy})",
                                         f"round {r}: chose round {r + 1}'s batch"):
                    sel = policy(ctx)
                crashpoint("selected", r)
                run.write_round(r + 1, sel.ids, cfg.strategy, sel.scores)
            m = metrics_row(r, len(labeled), acc, cfg.strategy,
                            {"train_s": t1 - t0, "eval_s": t2 - t1, **ctx.timings})
            rows.append(m)
            run.write_metrics(rows)
            log_round(m, cfg.rounds)
            if on_round is not None:
                on_round(m)
        return rows


def log_round(row: dict[str, Any], rounds: int) -> None:
    """The per-round line on stderr."""
    print(f"round {row['round']:>3}/{rounds}  labeled {row['n_labeled']:>6}  "
          f"acc {row['accuracy']:.4f}  train {row['train_s']:.1f}s  score {row['score_s']:.1f}s  "
          f"search {row['search_s']:.1f}s  select {row['select_s']:.2f}s",
          file=sys.stderr, flush=True)


def start_journal(cfg: Config, run: Run, pool_size: int) -> None:
    """Journal round 0, the seed set, unless it is there: a pure function of the seed."""
    if 0 not in run.journal_rounds():
        run.write_round(0, initial_ids(pool_size, cfg.init, derive(cfg.seed, 0, "init")), "init")


def prepare_data(cfg: Config) -> Dataset:
    """The campaign's dataset, with every check that needs it done before anything is
    written (`check_data`)."""
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.seed)
    check_data(cfg, data)
    return data


def check_data(cfg: Config, data: Dataset) -> None:
    """The config against the data: sizes against the pool, the model against the inputs, a
    pretrained file."""
    check_against_data(cfg, data.num_classes, len(data.train_y))
    check_model(cfg.model, data.input_shape, cfg.pretrained)
