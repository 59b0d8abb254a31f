"""FitNet and the loss column as small heads on f's frozen embeddings, cross-fitted.

Why cross-fitting: a head scored on the rows it was trained on rewards whatever it
memorised (the in-sample reward that made the first search prefer its own loss
column). Here L is split into K folds; each fold's rows are scored by a head
trained on the other K-1 folds, so every row of L gets *held-out* outputs and a
held-out loss, and all of L is evidence (not half of it).

What cross-fitting cannot remove: f itself was trained on all of L, so its
embeddings separate L's classes better than they will separate U's. The held-out
losses are therefore small; the search uses only their *ranks* (`centered_ranks`),
which stay informative (which rows were hardest for f to fit).

Pure torch/numpy: no Ray, no files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from autoal_dist.autoal.batched_lbfgs import minimize
from autoal_dist.models.inference import batch_seed


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold index (0..K-1) of each of n rows: a seeded permutation dealt round-robin,
    so fold sizes differ by at most one. K is capped at n."""
    k = max(1, min(folds, n))
    fold = np.empty(n, np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return fold


def standardize(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    """z-score every array with `train`'s per-feature mean/std (float32 tensors)."""
    mean = train.mean(0, dtype=np.float64)
    std = train.std(0, dtype=np.float64) + 1e-6
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in (train, *others)]


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks scaled to [-0.5, 0.5] (0 for a single row): a scale-free reward."""
    n = len(values)
    if n < 2:
        return np.zeros(n)
    return (rankdata(values) - 1) / (n - 1) - 0.5


@dataclass(frozen=True)
class HeadSettings:
    iters: int  # L-BFGS iterations at most
    weight_decay: float  # L2 on the weights (mean loss + wd/2 |W|^2)
    dropout: float  # MC-dropout rate on the embedding, f's own head's rate
    mc_samples: int


def fit_head(e: torch.Tensor, y: torch.Tensor, num_classes: int, h: HeadSettings,
             start: torch.nn.Linear | None = None) -> torch.nn.Linear:
    """FitNet: L2-regularized softmax regression on standardized embeddings, as a
    `torch.nn.Linear` (one head of `fit_stacked`: the project's one solver for it).

    Convex, so L-BFGS reaches the optimum in tens of iterations (full-batch Adam with
    dropout took 200 steps and dominated the round); it starts from zeros, or from
    `start` (a head fitted on most of the same rows: the same optimum in fewer
    iterations).
    """
    first = None if start is None else Heads.of(start)
    fitted = fit_stacked(e[None], y[None], num_classes, h, first)
    head = torch.nn.Linear(e.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(fitted.weight[0])
        head.bias.copy_(fitted.bias[0])
    return head.eval()


ALIGN_BYTES = 64  # where each stacked head's block starts (a cache line)


def aligned_empty(k: int, inner: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized [k, *inner] tensor whose blocks [i] each start on a 64-byte boundary
    (the blocks padded apart; each block contiguous).

    Why: a BLAS product's bits can depend on where its operands start in memory. MKL on an
    AMD EPYC does (measured: `torch.mm` of the same 3x6 by 6x40 operands differed in the
    last bits between two starting addresses, and a stacked head's fit differed from the
    same head's fit alone); on the Intel Xeon it did not. With every block aligned, head k's
    products are those of the head alone, so a head's fit does not depend on the heads
    stacked with it and the draws and splits can be dealt to workers in any grouping.
    """
    n, size = math.prod(inner), torch.empty(0, dtype=dtype).element_size()
    per = -(-n * size // ALIGN_BYTES) * ALIGN_BYTES // size
    buf = torch.empty(k * per + ALIGN_BYTES // size, dtype=dtype)
    start = (-buf.data_ptr() % ALIGN_BYTES) // size  # torch aligns allocations; never assume
    return buf[start:start + k * per].view(k, per)[:, :n].unflatten(1, inner)


def aligned(t: torch.Tensor) -> torch.Tensor:
    """A copy of t [K, ...] in `aligned_empty` blocks."""
    return aligned_empty(t.shape[0], tuple(t.shape[1:]), t.dtype).copy_(t)


@dataclass
class Heads:
    """K softmax-regression heads stacked: logits of head k = e @ weight[k].T + bias[k]."""

    weight: torch.Tensor  # [K, C, D]
    bias: torch.Tensor  # [K, C]

    @classmethod
    def of(cls, head: torch.nn.Linear) -> Heads:
        """One head, stacked (K = 1): a start for `fit_stacked`."""
        return cls(head.weight.detach()[None], head.bias.detach()[None])

    @torch.no_grad()
    def true_class_prob(self, e: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """[K]: each head's mean probability of the true classes of rows (e, y)."""
        logits = torch.matmul(e, aligned(self.weight).transpose(1, 2)) + self.bias[:, None]
        probs = torch.softmax(logits, 2)[:, torch.arange(len(y)), y]
        return probs.mean(1).double().numpy()


def fit_heads(e: torch.Tensor, y: torch.Tensor, rows: np.ndarray, num_classes: int,
              h: HeadSettings, start: torch.nn.Linear) -> Heads:
    """K heads, head k fitted on rows[k] (every head on as many rows), all from `start`.

    The objective per head is mean cross-entropy + wd/2 |W|^2, minimized by a batched
    L-BFGS that keeps every head's history, step and stopping test its own
    (`batched_lbfgs`): one batched matmul per step for all K heads, and a head's result does
    not depend on the heads it is fitted with, so a reward's draws or splits can be dealt
    to workers in any grouping. The gradient is written out (softmax regression's
    (P - Y)^T X), no autograd: the heads are tiny and autograd's bookkeeping was most of
    their time.
    """
    idx = torch.from_numpy(np.ascontiguousarray(rows, np.int64))
    return fit_stacked(e[idx], y[idx], num_classes, h, Heads.of(start))


def fit_stacked(x: torch.Tensor, t: torch.Tensor, num_classes: int, h: HeadSettings,
                start: Heads | None = None) -> Heads:
    """K heads, head k fitted on rows x[k] [m, D] with labels t[k] [m], all from `start`
    (one head, or zeros: the optimum does not depend on it) (`fit_heads`, for heads whose
    labels differ: the eer reward's draws)."""
    k, m, dim = x.shape
    c = num_classes
    onehot = F.one_hot(t, c).to(x.dtype).transpose(1, 2).contiguous()  # [K, C, m]
    x = aligned(x)  # every product's operands and results per head aligned (`aligned`)
    xt = x.transpose(1, 2)  # [K, D, m]
    w, grad_w = (aligned_empty(k, (c, dim), x.dtype) for _ in range(2))
    logits, resid = (aligned_empty(k, (c, m), x.dtype) for _ in range(2))
    wd = h.weight_decay

    def objective(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # classes in the middle ([K, C, m]): torch's softmax over a 10-wide innermost
        # axis was 15x slower than over this one
        w.copy_(theta[:, :c * dim].view(k, c, dim))
        b = theta[:, c * dim:]
        logp = torch.log_softmax(torch.baddbmm(b[:, :, None], w, xt, out=logits), 1)
        loss = -(logp * onehot).sum((1, 2)) / m + 0.5 * wd * (w * w).sum((1, 2))
        torch.sub(logp.exp(), onehot, out=resid).div_(m)  # [K, C, m]
        torch.bmm(resid, x, out=grad_w)
        return loss, torch.cat([(grad_w + wd * w).reshape(k, -1), resid.sum(2)], 1)

    if start is None:
        theta0 = torch.zeros(k, c * dim + c, dtype=x.dtype)
    else:
        theta0 = torch.cat([start.weight.reshape(1, -1), start.bias.reshape(1, -1)],
                           1).expand(k, -1)
    theta = minimize(objective, theta0, h.iters)
    return Heads(theta[:, :c * dim].reshape(k, c, dim).contiguous(),
                 theta[:, c * dim:].contiguous())


@torch.no_grad()
def head_outputs(head: torch.nn.Linear, e: torch.Tensor, h: HeadSettings,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(probs [n, C], MC-dropout probs [T, n, C]) of a FitNet head, as f's scoring pass
    would give them (eval-mode probs; T seeded dropout masks on the input)."""
    probs = torch.softmax(head(e), 1)
    g = torch.Generator().manual_seed(batch_seed(seed, 0))
    keep = 1.0 - h.dropout
    masks = ((torch.rand((h.mc_samples, *e.shape), generator=g) < keep).to(e.dtype)
             / max(keep, 1e-12))
    mc = torch.softmax(head(e[None] * masks), 2)
    return probs.numpy(), mc.numpy()


@dataclass
class CrossFit:
    """Held-out outputs of every row of L (rows aligned with the caller's ids)."""

    probs: np.ndarray  # [n, C]
    mc_probs: np.ndarray  # [T, n, C]
    loss: np.ndarray  # [n] held-out cross-entropy
    fold: np.ndarray  # [n]


def crossfit(emb: np.ndarray, y: np.ndarray, num_classes: int, folds: int, h: HeadSettings,
             seed: int) -> CrossFit:
    """Each fold scored by a FitNet head trained on the other folds.

    With one fold (a single labeled row) there is nothing held out: the head is
    trained and scored on the same row, and the loss carries no ranking anyway.
    """
    n = len(y)
    fold = fold_of(n, folds, seed)
    probs = np.zeros((n, num_classes), np.float32)
    mc = np.zeros((h.mc_samples, n, num_classes), np.float32)
    for k in np.unique(fold):
        test = fold == k
        train = ~test if (~test).any() else test
        e_train, e_test = standardize(emb[train], emb[test])
        head = fit_head(e_train, torch.from_numpy(y[train].astype(np.int64)), num_classes, h)
        probs[test], mc[:, test] = head_outputs(head, e_test, h, seed + int(k))
    loss = -np.log(np.clip(probs[np.arange(n), y], 1e-12, None))
    return CrossFit(probs, mc, loss.astype(np.float64), fold)


def ridge_fit_predict(e_train: np.ndarray, target: np.ndarray, e_test: np.ndarray,
                      alpha: float) -> np.ndarray:
    """The loss column's predictor: ridge regression of `target` on standardized
    embeddings (closed form in float64; LPL's role with no net to overfit)."""
    a, b = (t.double() for t in standardize(e_train, e_test))
    a1 = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    reg = alpha * torch.eye(a1.shape[1], dtype=a.dtype)
    reg[-1, -1] = 0.0  # no shrinkage on the intercept
    t = torch.from_numpy(np.asarray(target, np.float64))[:, None]
    coef = torch.linalg.solve(a1.T @ a1 + reg, a1.T @ t)
    return (torch.cat([b, torch.ones(len(b), 1, dtype=b.dtype)], 1) @ coef)[:, 0].numpy()


def crossfit_predicted_loss(emb: np.ndarray, reward: np.ndarray, fold: np.ndarray,
                            alpha: float) -> np.ndarray:
    """Out-of-fold predicted reward per row: the loss column is never scored in-sample."""
    pred = np.zeros(len(reward))
    for k in np.unique(fold):
        test = fold == k
        train = ~test if (~test).any() else test
        pred[test] = ridge_fit_predict(emb[train], reward[train], emb[test], alpha)
    return pred
