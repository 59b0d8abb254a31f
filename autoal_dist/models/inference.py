"""One forward pass over pool samples -> PoolOutputs for every requested strategy.

Batches are fixed-size and aligned to positions in the pool order, and MC
dropout masks are drawn per global batch index. A shard that starts on a batch
boundary therefore computes bitwise the same outputs as the single-process
pass, which is what makes distributed selection exact.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import Classifier
from autoal_dist.outputs import PoolOutputs


def batch_seed(seed: int, global_batch: int) -> int:
    """MC-dropout generator seed for one batch: independent of which process runs it."""
    return int(np.random.SeedSequence([int(seed), int(global_batch)]).generate_state(1)[0])


@torch.no_grad()
def compute_outputs(
    model: Classifier,
    x: np.ndarray,
    ids: np.ndarray,
    normalize: Normalizer,
    *,
    needs: Iterable[str] = ("probs", "embeddings"),
    batch_size: int = 256,
    mc_samples: int = 10,
    seed: int = 0,
    first_batch: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> PoolOutputs:
    """Outputs for samples `x` (rows aligned with `ids`).

    `first_batch` is the global index of this slice's first batch; slices must
    start on a multiple of `batch_size` of the full pool order. The outputs are
    allocated once, at their full size, and filled batch by batch: appending each
    batch's small arrays instead would leave them scattered between the batch's large
    freed temporaries, and the heap (glibc) would grow with the rows passed.
    """
    model.eval()
    n, n_classes = len(x), model.num_classes
    want_mc = "mc_probs" in set(needs)
    probs = np.empty((n, n_classes), np.float32)
    embs = np.empty((n, model.embedding_dim), np.float32)
    mcs = np.empty((mc_samples, n, n_classes), np.float32) if want_mc else None
    for b, lo in enumerate(range(0, n, batch_size)):
        xb = normalize(x[lo:lo + batch_size]).to(device)
        hi = lo + len(xb)
        e = model.embed(xb)
        probs[lo:hi] = torch.softmax(model.fc(e), dim=1).float().cpu().numpy()
        embs[lo:hi] = e.float().cpu().numpy()
        if mcs is not None:
            g = torch.Generator(device=e.device).manual_seed(batch_seed(seed, first_batch + b))
            mc = torch.softmax(model.mc_head(e, mc_samples, g), dim=2)
            mcs[:, lo:hi] = mc.float().cpu().numpy()
        del xb, e
        if progress:
            progress(hi - lo)
    return PoolOutputs(ids=np.asarray(ids, dtype=np.int64), probs=probs, embeddings=embs,
                       mc_probs=mcs)


@torch.no_grad()
def predict(model: Classifier, x: np.ndarray, normalize: Normalizer,
            batch_size: int = 512, device: str | torch.device = "cpu") -> np.ndarray:
    """Predicted class per sample (eval mode)."""
    model.eval()
    out = [model(normalize(x[lo:lo + batch_size]).to(device)).argmax(1).cpu().numpy()
           for lo in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.empty(0, np.int64)
