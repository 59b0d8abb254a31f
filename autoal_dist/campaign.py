"""The round loop: train -> evaluate -> score -> select -> label (journal), resumable.

Round r trains on the labeled set of journal rounds 0..r, evaluates, and (if
r < rounds) queries round r+1's batch. Each step's result is durable before the
next starts, so a campaign resumes from whatever its files say, exactly.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from autoal_dist import labeling, store
from autoal_dist.config import Config, check_against_data
from autoal_dist.data import Dataset, load_dataset
from autoal_dist.data.transforms import Normalizer, wants_augmentation
from autoal_dist.faults import crashpoint
from autoal_dist.inference import predict
from autoal_dist.models.backbones import Classifier, ModelSpec
from autoal_dist.policies import RoundContext, policy_for
from autoal_dist.scoring import LocalScorer, Scorer
from autoal_dist.seeds import derive
from autoal_dist.strategies import top_b
from autoal_dist.strategies.uncertainty import hashed_uniform
from autoal_dist.training import TrainSettings, num_steps, train_classifier

METRICS_SCHEMA = pa.schema([
    ("round", pa.int32()), ("n_labeled", pa.int64()), ("accuracy", pa.float64()),
    ("strategy", pa.string()), ("train_s", pa.float64()), ("eval_s", pa.float64()),
    ("score_s", pa.float64()), ("search_s", pa.float64()), ("select_s", pa.float64()),
])


def initial_ids(pool_size: int, n: int, seed: int) -> np.ndarray:
    """The seed set: n ids uniformly at random, as a pure function of the seed."""
    ids = np.arange(pool_size, dtype=np.int64)
    return np.sort(top_b(ids, hashed_uniform(ids, seed), n))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Campaign:
    def __init__(self, cfg: Config, run_dir: Path, data: Dataset, *, scorer: Scorer | None = None,
                 show_progress: bool = True):
        self.cfg, self.run_dir, self.data = cfg, Path(run_dir), data
        self.device = "cuda" if cfg.gpu and torch.cuda.is_available() else "cpu"
        self.normalize = Normalizer.fit(data.train_x)
        self.show_progress = show_progress
        self.awaiting: int | None = None  # oracle files: the round whose batch awaits labels
        self.spec = ModelSpec.resolve(cfg.model, data.input_shape, data.num_classes,
                                      cfg.train.dropout, cfg.pretrained)
        self.ray_train = False  # True: classifier training runs as a Ray Train job
        self.scorer = scorer or LocalScorer(data.train_x, self.normalize, cfg.score.batch_size,
                                            cfg.score.mc_samples, self.device, show_progress)

    @classmethod
    def on_ray(cls, cfg: Config, run_dir: Path, data: Dataset, show_progress: bool = True):
        """The campaign with its scoring pass on `cfg.shards` Ray actors (0 = one per CPU/GPU)."""
        from autoal_dist.distributed import default_shards, ensure_ray
        from autoal_dist.distributed.scorer import RayScorer

        ensure_ray()
        camp = cls(cfg, run_dir, data, show_progress=show_progress)
        camp.ray_train = True
        camp.scorer = RayScorer(data.train_x, camp.normalize, camp.spec,
                                shards=cfg.shards or default_shards(cfg.gpu),
                                batch_size=cfg.score.batch_size, mc_samples=cfg.score.mc_samples,
                                use_gpu=cfg.gpu, persistent=cfg.workers == 0)
        return camp

    def close(self) -> None:
        """Stop the scorer's actors (a campaign inside a long-lived process must not leak them)."""
        close = getattr(self.scorer, "close", None)
        if close is not None:
            close()

    # ---- state derived from files -------------------------------------------------
    def labeled_through(self, round_: int) -> np.ndarray:
        journal = store.read_journal(self.run_dir)
        rounds = journal.column("round").to_numpy()
        return np.sort(journal.column("id").to_numpy()[rounds <= round_])

    def completed_rows(self) -> list[dict]:
        """Metrics of rounds that need no more work: evaluated and, unless last, queried.

        A round evaluated as the last of a shorter campaign has not queried yet,
        so raising --rounds on resume redoes it (same seed, same result).
        """
        path = self.run_dir / "metrics.parquet"
        rows = pq.read_table(path).to_pylist() if path.exists() else []
        queried = set(store.journal_rounds(self.run_dir))
        done = []
        for r in rows:
            if r["round"] != len(done) or r["round"] > self.cfg.rounds:
                break
            if r["round"] < self.cfg.rounds and r["round"] + 1 not in queried:
                break
            done.append(r)
        return done

    # ---- phases ---------------------------------------------------------------------
    def train(self, labeled: np.ndarray, round_: int) -> Classifier:
        """Fit a fresh classifier on the labeled set (seeded by campaign seed and round)."""
        from tqdm import tqdm

        cfg, t = self.cfg, self.cfg.train
        seed = derive(cfg.seed, round_, "train")
        settings = TrainSettings(t.epochs, t.batch_size, t.lr, t.optimizer, t.weight_decay,
                                 t.min_steps)
        x, y = self.data.train_x[labeled], self.data.train_y[labeled]
        use_augment = wants_augmentation(t.augment, self.data.input_shape)
        steps = num_steps(len(x), settings)
        if self.ray_train:
            from autoal_dist.distributed.train import TrainJob, fit_classifier
            from autoal_dist.remote import train_location

            job = TrainJob(self.spec, settings, seed, use_augment, max(1, steps // 4), t.threads)
            return fit_classifier(x, y, self.normalize, job, workers=cfg.workers,
                                  use_gpu=cfg.gpu,
                                  storage=train_location(self.run_dir, cfg.workers),
                                  name=f"round{round_:03d}")
        torch.set_num_threads(t.threads)
        torch.manual_seed(seed)
        with tqdm(total=steps, desc=f"train r{round_}", leave=False,
                  disable=not self.show_progress) as bar:

            def progress(step: int, loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                crashpoint("train_step", round_)

            return train_classifier(
                self.spec.build(), x, y, self.normalize, settings, seed, use_augment=use_augment,
                device=self.device, progress=progress)

    def evaluate(self, model: Classifier) -> float:
        pred = predict(model, self.data.test_x, self.normalize, self.cfg.train.eval_batch_size,
                       self.device)
        return float((pred == self.data.test_y).mean())

    def reveal_labels(self, round_: int) -> bool:
        """Oracle files: train on the labels people imported, never the dataset's.

        False (and `self.awaiting` set) while a batch journaled in rounds 0..round_ still
        lacks labels: the campaign stops there until `autoal-dist import` supplies them.
        """
        awaiting = labeling.awaiting_round(self.run_dir)
        if awaiting is not None and awaiting <= round_:
            self.awaiting = awaiting
            return False
        self.data = dataclasses.replace(
            self.data, train_y=labeling.revealed_labels(self.run_dir, len(self.data.train_y)))
        return True

    # ---- the loop -------------------------------------------------------------------
    def run(self, on_round: Callable[[dict], None] | None = None) -> list[dict]:
        """Run the remaining rounds; `on_round(row)` follows each durable metrics row
        (a Tune trial reports it, so ASHA can stop the campaign between rounds)."""
        cfg = self.cfg
        n_pool = len(self.data.train_y)
        if 0 not in store.journal_rounds(self.run_dir):
            store.write_round(self.run_dir, 0, initial_ids(n_pool, cfg.init, derive(cfg.seed, 0, "init")),
                              "init")
        rows = self.completed_rows()
        policy = policy_for(cfg.strategy)
        for r in range(len(rows), cfg.rounds + 1):
            if cfg.oracle == "files" and not self.reveal_labels(r):
                break
            labeled = self.labeled_through(r)
            t0 = time.perf_counter()
            model = self.train(labeled, r)
            crashpoint("trained", r)
            t1 = time.perf_counter()
            acc = self.evaluate(model)
            crashpoint("evaluated", r)
            t2 = time.perf_counter()
            ctx = RoundContext(cfg, self.data, self.normalize, model, self.scorer, r, labeled,
                               np.setdiff1d(np.arange(n_pool), labeled), self.device, self.run_dir,
                               ray_train=self.ray_train)
            if r < cfg.rounds and (r + 1) not in store.journal_rounds(self.run_dir):
                sel = policy(ctx)
                crashpoint("selected", r)
                store.write_round(self.run_dir, r + 1, sel.ids, cfg.strategy, sel.scores)
            rows.append({"round": r, "n_labeled": len(labeled), "accuracy": acc,
                         "strategy": cfg.strategy, "train_s": t1 - t0, "eval_s": t2 - t1,
                         "score_s": ctx.timings.get("score_s", 0.0),
                         "search_s": ctx.timings.get("search_s", 0.0),
                         "select_s": ctx.timings.get("select_s", 0.0)})
            store.write_table(self.run_dir / "metrics.parquet",
                              pa.Table.from_pylist(rows, schema=METRICS_SCHEMA))
            m = rows[-1]
            log(f"round {r:>3}/{cfg.rounds}  labeled {m['n_labeled']:>6}  acc {acc:.4f}  "
                f"train {m['train_s']:.1f}s  score {m['score_s']:.1f}s  "
                f"search {m['search_s']:.1f}s  select {m['select_s']:.2f}s")
            if on_round is not None:
                on_round(m)
        return rows


def prepare_data(cfg: Config) -> Dataset:
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.seed)
    check_against_data(cfg, data.num_classes, len(data.train_y))
    return data
