"""RayScorer: the round's scoring pass on K actors over contiguous, aligned shards.

Same contract as `autoal_dist.scoring.LocalScorer.select_many`, and the same
results bit for bit: shards start on multiples of the alignment unit (the
scoring batch size), set strategies use that unit as their block, and every
merge follows a total order (score desc / key asc, then smallest id).

The pool reaches the actors one of two ways. An in-memory dataset is put in the object
store once per campaign and every actor maps it (zero-copy on its node). A stored pool
(`data.is_stored`: `--dataset pool:DIR_OR_URI`) is never put: each actor gets its
`StoredArray` (a few KB) and reads only the rows of its own shard from storage, keeping up
to `cache_bytes` of them decoded across rounds; its actors are spread over the nodes
(`scheduling_strategy="SPREAD"`), as no node has to hold the pool. The driver then holds
ids, labels and each round's small results (top-b lists, the labeled set's embeddings).

Fault tolerance: actors restart (max_restarts=-1) and Ray retries their calls;
a restarted actor has lost its round state and answers NeedsRebuild. The driver
then re-runs that shard's `prepare` and replays the calls logged for it. Every
call is deterministic, so the rebuilt shard equals the lost one and the round's
selection does not change.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayTaskError

from autoal_dist.config import ConfigError
from autoal_dist.data.base import DataError
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import Classifier, ModelSpec
from autoal_dist.outputs import PoolOutputs
from autoal_dist.placement import WATCH_S, Stall, StallWatch
from autoal_dist.progress import QUIET, Progress
from autoal_dist.scoring.actors import NeedsRebuild, ScorerActor, ShardTask
from autoal_dist.scoring.base import Selection
from autoal_dist.strategies import SetStrategy, get, merge_top_b, needs_of
from autoal_dist.strategies.sharded import shard_slices

REBUILD_ATTEMPTS = 5
CACHE_ENV = "AUTOAL_DIST_SCORER_CACHE_MB"


def default_cache_bytes() -> int | None:
    """The keep budget AUTOAL_DIST_SCORER_CACHE_MB (in the driver's environment) sets, in
    bytes (0: read every round); None when it is unset: each actor then keeps what fits
    its shard's bound, up to 1 GiB (`actors.keep_budget`)."""
    value = os.environ.get(CACHE_ENV)
    if value is None or not value.strip():
        return None
    try:
        mb = float(value)
    except ValueError:
        mb = float("nan")
    if not 0 <= mb < float("inf"):
        raise ConfigError(CACHE_ENV, f"{value!r} is not a number of MiB >= 0 (the keep budget "
                          "of each scorer actor; unset: what fits its shard, up to 1 GiB)")
    return int(min(mb * (1 << 20), float(1 << 62)))  # beyond any machine: keep everything


def _size(n: float) -> str:
    """`n` bytes in B, KB, MB or GB (powers of 1000)."""
    if n < 1000:
        return f"{n:.0f} B"
    units = ["KB", "MB", "GB"]
    n /= 1000
    while n >= 1000 and len(units) > 1:
        n, units = n / 1000, units[1:]
    return f"{n:.1f} {units[0]}"


def _needs_rebuild(err: BaseException) -> bool:
    return isinstance(err, RayTaskError) and isinstance(err.as_instanceof_cause(), NeedsRebuild)


def _user_error(err: RayTaskError) -> BaseException:
    """A stored pool's DataError raised in an actor (a part file gone or replaced since the
    run started) as the one-line DataError the CLI reports; any other error unchanged."""
    cause = getattr(err, "cause", None)
    return DataError(str(cause)) if isinstance(cause, DataError) else err


STARTING = "STARTING"  # PENDING_CREATION with a worker process: placed, its __init__ runs


def _actor_state(actor: Any) -> tuple[str | None, str | None]:
    """(state, the address of its node when that node is gone) of an actor, from the GCS
    (no dashboard needed); (None, None) when it cannot be told. An actor pending creation
    that already has its worker process on a live node is STARTING: its resources are
    granted, and on a loaded machine importing torch in it can take longer than the stall
    watch's 20 s (a fresh actor once read as "waits for 1 CPU, 0 free": its own CPU)."""
    try:
        import ray._private.state as gcs

        info = gcs.actors(actor._actor_id.hex())
        state = info.get("State")
        if state == "ALIVE":  # the usual answer: no look at the nodes
            return state, None
        node_id = (info.get("Address") or {}).get("NodeID")
        gone = next((n.get("NodeManagerAddress") for n in ray.nodes()
                     if n.get("NodeID") == node_id and not n.get("Alive")), None)
        if state == "PENDING_CREATION" and info.get("Pid") and gone is None:
            return STARTING, None
        return state, gone
    except Exception:  # noqa: BLE001 - an internal API: no answer is not an error
        return None, None


def _get(refs: Any) -> Any:
    """ray.get, with an actor's DataError re-raised as itself (one line, exit 2)."""
    try:
        return ray.get(refs)
    except RayTaskError as err:
        user = _user_error(err)
        if user is err:
            raise
        raise user from None


class ShardProxy:
    """Driver-side handle of one actor's shard: the strategy drivers reach its shard
    methods (`step`, `assign`, `nearest`) through `call_async` (`sharded.gather`)."""

    def __init__(self, scorer: RayScorer, k: int, name: str | None = None) -> None:
        self.scorer, self.k, self.name = scorer, k, name
        self.log: list[tuple[str, tuple]] = []  # (actor method, args) since prepare
        self.pending: list[ray.ObjectRef] = []

    def submit(self, method: str, *args: Any, wait: bool = True) -> Any:
        """Log and send one actor call; its result, or (wait=False) a callable that waits
        for it. Unwaited calls still resolve, in order, before the next waited result."""
        self.log.append((method, args))
        ref = getattr(self.scorer.actors[self.k], method).remote(*args)
        if wait:
            return self.scorer.resolve(self, ref)
        self.pending.append(ref)
        return lambda: self.scorer.resolve(self, ref)

    def call_async(self, method: str, *args: Any):
        """Start a shard method now, wait later (`sharded.gather`): shards run concurrently."""
        return self.submit("shard_call", self.scorer.key, self.name, method, args, wait=False)


class RayScorer:
    """K ScorerActors over the campaign's pool: an in-memory array (put in the object
    store once) or a stored pool's StoredArray (never put: each actor reads its shard).

    The actors live until `close`: for the whole campaign, rounds of Ray Train fits
    included (the cluster holds both at once: `execution.reservation`), so a stored pool's
    actor keeps its shard's rows across rounds and reads them from storage once (as far as
    its keep budget allows). `actors` given: run on those instead of starting its own
    (tests: a scorer over another one's first actor).
    """

    def __init__(self, x: np.ndarray, normalize: Normalizer, spec: ModelSpec, *, shards: int,
                 batch_size: int = 256, mc_samples: int = 10, use_gpu: bool = False,
                 gpu_share: float | None = None, cache_bytes: int | None = None,
                 progress: Progress = QUIET, actors: list[Any] | None = None) -> None:
        """`gpu_share`: each actor's part of a GPU with `use_gpu` (default: the cluster's
        GPUs split evenly over the actors, at most one each)."""
        self.batch_size, self.mc_samples = batch_size, mc_samples
        self.progress = progress
        self.normalize, self.spec = normalize, spec
        self.shards = shards
        self.stored = not isinstance(x, np.ndarray)
        self.cache_bytes = default_cache_bytes() if cache_bytes is None else int(cache_bytes)
        # In memory: put once per campaign, actors read it zero-copy ([ref]: nested, so
        # each actor fetches it). Stored: the StoredArray itself, pickled into each actor.
        self.pool: Any = x if self.stored else [ray.put(x)]
        if not use_gpu:
            gpu_share = 0.0
        elif gpu_share is None:
            gpus = ray.cluster_resources().get("GPU", 0)
            gpu_share = min(1.0, gpus / shards) if gpus else 0.0
        self.options: dict[str, Any] = {"num_cpus": 1, "num_gpus": gpu_share}
        if self.stored:
            # An in-memory pool stays packed near the driver (Ray's default): each node
            # hosting an actor pulls a whole copy of it. A stored pool is read from storage
            # by shard, so spreading costs nothing and uses every node's CPUs and memory.
            self.options["scheduling_strategy"] = "SPREAD"
        self.device = "cuda" if gpu_share else "cpu"
        self.actors: list[ray.actor.ActorHandle] = []
        self.key = ""
        self.tasks: list[ShardTask] = []
        self.kept_labeled: np.ndarray | None = None  # a kept pass's labeled embeddings
        self.rebuild: list[tuple[str, tuple]] = []  # per shard: the call that rebuilds its round
        self.reads: dict[int, tuple[int, int]] = {}  # actor pid -> (groups, bytes) read so far
        if actors is None:
            self.start()
        else:
            self.actors = list(actors)

    @property
    def num_shards(self) -> int:
        return len(self.actors)

    def start(self) -> None:
        actor: Any = ScorerActor  # a Ray actor class: .options/.remote come from @ray.remote
        self.actors = [actor.options(**self.options).remote(
            self.normalize, self.spec, self.device, cache_bytes=self.cache_bytes)
            for _ in range(self.shards)]

    def stats(self) -> list[dict[str, Any]]:
        """Each actor's `ScorerActor.stats()`: rows read, bytes kept, RSS (tests, benchmarks)."""
        return ray.get([a.stats.remote() for a in self.actors])

    def _note_reads(self) -> None:
        """Say what the actors read from storage since the last round, and what they keep
        for the next: counters of each actor's process (one that restarted starts again)."""
        stats = self._get([a.stats.remote() for a in self.actors])
        groups = nbytes = 0
        for st in stats:
            g0, b0 = self.reads.get(st["pid"], (0, 0))
            groups, nbytes = groups + st["groups_read"] - g0, nbytes + st["bytes_read"] - b0
        self.reads = {st["pid"]: (st["groups_read"], st["bytes_read"]) for st in stats}
        kept = sum(st["kept_bytes"] for st in stats)
        self.progress.note(f"    read {groups} row group{'s' * (groups != 1)} "
                           f"({_size(nbytes)}) from storage; kept for the next round: "
                           f"{_size(kept)} decoded")

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []

    def _get(self, refs: Any) -> Any:
        """`_get`, watching the actors while it waits: one that lost its node and cannot be
        placed again is named after STUCK_S (`_watch`)."""
        pending = list(refs) if isinstance(refs, list) else [refs]
        watch = StallWatch(self.progress.note)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=WATCH_S)
            if pending:
                self._watch(watch)
        return _get(refs)

    def _watch(self, watch: StallWatch) -> None:
        """Each actor not ALIVE (and not DEAD) is a stall of one bundle, its CPU (and GPU):
        `StallWatch` names it after STUCK_S with no room for it, and stops the run on a
        fixed cluster (`--resume --shards K-1` goes on)."""
        for k, actor in enumerate(self.actors):
            state, node = _actor_state(actor)
            if state in (None, "ALIVE", "DEAD", STARTING):
                watch.check(k, None)
                continue
            what = (f"scorer actor {k + 1} of {len(self.actors)} is {state}"
                    + (f" (its node {node} left the cluster)" if node else ""))
            bundle = {"CPU": float(self.options["num_cpus"]),
                      "GPU": float(self.options["num_gpus"])}
            watch.check(k, Stall(what, bundle, 1, len(self.actors), "--shards", least=1))

    def resolve(self, proxy: ShardProxy, ref: ray.ObjectRef) -> Any:
        """ray.get, rebuilding the shard and replaying its log if its actor restarted."""
        actor = self.actors[proxy.k]
        for _ in range(REBUILD_ATTEMPTS):
            try:
                self._get(proxy.pending)
                proxy.pending = []
                return self._get(ref)
            except RayTaskError as err:
                if not _needs_rebuild(err):
                    raise
            proxy.pending = []
            method, args = self.rebuild[proxy.k]
            self._get(getattr(actor, method).remote(*args))
            self._get([getattr(actor, m).remote(*a) for m, a in proxy.log[:-1]])
            method, args = proxy.log[-1]
            ref = getattr(actor, method).remote(*args)
        raise RuntimeError(f"scorer shard {proxy.k} kept losing its state; giving up")

    def _gather(self, refs: list[ray.ObjectRef], done: str) -> list[Any]:
        """`_get` of one call per shard, saying as each shard finishes (`progress`)."""
        start, pending = time.monotonic(), list(refs)
        watch = StallWatch(self.progress.note)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=WATCH_S)
            if not ready:
                self._watch(watch)
                continue
            self.progress.note(f"    shard {len(refs) - len(pending)}/{len(refs)} {done} "
                               f"({time.monotonic() - start:.1f} s)")
        return _get(refs)

    # ---- per round ------------------------------------------------------------------
    def prepare(self, model: Classifier, positions: np.ndarray, names: list[str], seed: int,
                labeled_positions: np.ndarray, with_labeled: bool = False) -> np.ndarray | None:
        """Broadcast weights, run the forward pass on every shard; gather labeled embeddings
        (when a strategy reads them, or `with_labeled`)."""
        needs = needs_of(names)
        want_lab = "labeled_embeddings" in needs or with_labeled
        self.key = uuid.uuid4().hex  # names this round's state in the actors
        weights_ref = ray.put({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
        unl = shard_slices(len(positions), self.num_shards, self.batch_size)
        lab = shard_slices(len(labeled_positions), self.num_shards, self.batch_size)
        self.tasks = [ShardTask(self.key, positions[u], u.start,
                                labeled_positions[lb] if want_lab else np.empty(0, np.int64),
                                needs | {"probs", "embeddings"}, self.batch_size,
                                self.mc_samples, seed)
                      for u, lb in zip(unl, lab)]
        self.rebuild = [("prepare", (t, weights_ref, self.pool)) for t in self.tasks]
        parts = self._gather([a.prepare.remote(*args) for a, (_, args)
                              in zip(self.actors, self.rebuild)], "scored")
        if self.stored and self.progress.enabled:
            self._note_reads()
        embs = [p for p in parts if p is not None]
        return np.concatenate(embs) if want_lab and embs else None

    def load_outputs(self, outputs: PoolOutputs) -> None:
        """Give the actors this round's outputs instead of computing them (benchmarks of the
        selection alone): split as `prepare` splits, each shard's part put once."""
        self.key = uuid.uuid4().hex
        self.tasks = [ShardTask(self.key, outputs.ids[sl], sl.start, np.empty(0, np.int64),
                                frozenset(), self.batch_size, self.mc_samples, 0)
                      for sl in shard_slices(len(outputs), self.num_shards, self.batch_size)]
        self.rebuild = [("load_outputs", (t, ray.put(outputs.take(
            slice(t.start, t.start + len(t.positions)))))) for t in self.tasks]
        ray.get([getattr(a, m).remote(*args) for a, (m, args) in zip(self.actors, self.rebuild)])

    def _top_b(self, name: str, budget: int, seed: int) -> Selection:
        proxies = [ShardProxy(self, k) for k in range(self.num_shards)]
        refs = []
        for p in proxies:  # submit all, then wait: shards score in parallel
            p.log.append(("top_b", (self.key, name, budget, seed)))
            refs.append(self.actors[p.k].top_b.remote(self.key, name, budget, seed))
        return Selection(*merge_top_b([self.resolve(p, r) for p, r in zip(proxies, refs)], budget))

    def set_shards(self, name: str, labeled_embeddings: np.ndarray | None) -> list[ShardProxy]:
        """Build set strategy `name`'s state on every non-empty shard (sent without waiting):
        the proxies its driver runs on."""
        lab_ref = ray.put(labeled_embeddings) if labeled_embeddings is not None else None
        proxies = [ShardProxy(self, k, name) for k, t in enumerate(self.tasks)
                   if len(t.positions)]
        for p in proxies:
            p.submit("shard_init", self.key, name, self.tasks[p.k].start, self.batch_size,
                     lab_ref, wait=False)
        return proxies

    def select_set(self, name: str, budget: int, seed: int,
                   labeled_embeddings: np.ndarray | None) -> Selection:
        """A set strategy over the actors' shards: its driver, each step one call per shard."""
        strategy = get(name)
        if not isinstance(strategy, SetStrategy):
            raise TypeError(f"{name} is not a set strategy")
        ids = strategy.drive(self.set_shards(name, labeled_embeddings), budget, seed)
        return Selection(ids, np.full(len(ids), np.nan))

    def rows(self, ids: np.ndarray) -> PoolOutputs:
        """The last pass's outputs at pool `ids` (sorted), each shard asked for its own."""
        ids = np.asarray(ids, np.int64)
        parts: list[tuple[ShardProxy, ray.ObjectRef]] = []
        for k, t in enumerate(self.tasks):
            if not len(t.positions):
                continue
            lo, hi = np.searchsorted(ids, [t.positions[0], t.positions[-1] + 1])
            if hi > lo:
                p = ShardProxy(self, k)
                p.log.append(("rows", (self.key, ids[lo:hi])))
                parts.append((p, self.actors[k].rows.remote(self.key, ids[lo:hi])))
        got = [self.resolve(p, r) for p, r in parts]
        if sum(len(g) for g in got) != len(ids) or not got:
            raise KeyError(f"{len(ids) - sum(len(g) for g in got)} of {len(ids)} pool ids "
                           "asked were not in the last scoring pass")
        return PoolOutputs.concat(got)

    def labeled(self) -> np.ndarray:
        if self.kept_labeled is None:
            raise RuntimeError("RayScorer.labeled: no scoring pass kept (select_many(..., "
                               "keep=True))")
        return self.kept_labeled

    def select_many(self, model, positions, names, budget, seed, labeled_positions,
                    timings=None, keep=False) -> dict[str, Selection]:
        t0 = time.perf_counter()
        lab_emb = self.prepare(model, np.asarray(positions, np.int64), names, seed,
                               np.asarray(labeled_positions, np.int64), with_labeled=keep)
        self.kept_labeled = lab_emb if keep else None
        t1 = time.perf_counter()
        out = {n: self._top_b(n, budget, seed) if get(n).kind == "scoring"
               else self.select_set(n, budget, seed, lab_emb) for n in names}
        if timings is not None:
            timings["score_s"] = timings.get("score_s", 0.0) + t1 - t0
            timings["select_s"] = timings.get("select_s", 0.0) + time.perf_counter() - t1
        return out
