"""The default search's SearchNet: strategy-level weights fitted by the relaxed top-q objective.

    maximize   sum_k d_k [ sum_j reward_kj s_kj(w) / q_k ]  /  sum_k d_k
               - (shrink / Q) * sum_m (theta_m - mean(theta))^2,      w = softmax(theta)

over the evidence of every round k so far (`Evidence`: the 0/1 memberships of
each candidate's top-q of L, and the centered ranks of L's held-out losses),
with d_k = evidence_decay^(r - k) and Q = sum_k d_k q_k, the decayed number of
picks each candidate has been judged on. s_k is the relaxed top-q_k membership
over round k's rows (`relax_count`): its threshold is solved so that the soft
count equals q_k, the candidates' own pick count, exactly, and its temperature is
soft (weights_tau * std(p)) so every row near the boundary carries gradient. The
reward is the mean held-out loss rank of what the weights would select.

Why strategy-level: a per-sample SearchNet fitted on tens of rows overfits (it
fits L's losses and does not transfer); one weight per candidate is what the
evidence can support, and the penalty keeps the weights at uniform (the plain
vote) until enough picks say otherwise. theta starts at uniform and Adam stops
once no weight moved more than `tol` over the last `WINDOW` steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from autoal_dist.autoal.relax import relax_count
from autoal_dist.config import AutoALConfig

WINDOW = 10  # steps over which "the weights stopped moving" is judged


@dataclass(frozen=True)
class Evidence:
    """One round's search set: rows of L with held-out rewards."""

    round: int
    memberships: np.ndarray  # [n, M'] 0/1, candidates then the loss column
    reward: np.ndarray  # [n] centered ranks of held-out loss, in [-0.5, 0.5]
    q: int  # each column's pick count on these rows (the soft count's target)


@dataclass
class WeightFit:
    logits: np.ndarray  # [M'] theta
    weights: np.ndarray  # [M'] softmax over active columns (0 for inactive)
    iterations: int  # Adam steps run (early stop included)
    soft_count: float  # sum of s over the current round's rows at the end
    target: float  # the current round's q
    grad_norm: float  # |d objective / d theta| at the last step
    rank_corr: float  # Spearman(z, held-out reward) on the current round's rows


def masked_softmax(theta: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    return torch.softmax(theta.masked_fill(~active, float("-inf")), dim=0)


def padded(evidence: list[Evidence]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(memberships [R, n, M'], reward [R, n], mask [R, n]): rounds padded to one shape, so
    a step relaxes every round in a few array operations instead of R small ones."""
    n = max(len(e.reward) for e in evidence)
    width = evidence[-1].memberships.shape[1]
    member = np.zeros((len(evidence), n, width))
    reward = np.zeros((len(evidence), n))
    mask = np.zeros((len(evidence), n), bool)
    for k, e in enumerate(evidence):
        member[k, :len(e.reward)] = e.memberships
        reward[k, :len(e.reward)] = e.reward
        mask[k, :len(e.reward)] = True
    return torch.from_numpy(member), torch.from_numpy(reward), torch.from_numpy(mask)


def fit_weights(evidence: list[Evidence], active: np.ndarray, a: AutoALConfig) -> WeightFit:
    """Fit theta on `evidence` (the current round last); `active` masks columns that do
    not take part this round (the loss column while L is too small for it). Deterministic:
    theta starts at uniform and every step is a fixed function of the evidence."""
    current = evidence[-1]
    decay = torch.tensor([a.evidence_decay ** (current.round - e.round) for e in evidence],
                         dtype=torch.float64)
    q = torch.tensor([float(e.q) for e in evidence], dtype=torch.float64)
    q_eff = float((decay * q).sum())
    col = torch.from_numpy(np.asarray(active, bool))
    member, reward, mask = padded(evidence)
    theta = torch.zeros(len(active), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=a.weights_lr)

    def objective() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = masked_softmax(theta, col)
        s = relax_count(member @ w, mask, q, a.weights_tau)
        gain = (decay * (reward * s).sum(1) / q).sum() / decay.sum()
        centered = theta[col] - theta[col].mean()
        return -gain + a.shrink / q_eff * (centered ** 2).sum(), w, s

    history = [masked_softmax(theta, col).detach().numpy()]
    it = 0
    for it in range(1, a.search_iters + 1):
        opt.zero_grad(set_to_none=True)
        objective()[0].backward()
        opt.step()
        history.append(masked_softmax(theta, col).detach().numpy())
        if it >= WINDOW and np.abs(history[-1] - history[-1 - WINDOW]).max() < a.tol:
            break
    opt.zero_grad(set_to_none=True)
    loss, w, s = objective()
    loss.backward()
    assert theta.grad is not None  # theta requires grad and the loss depends on it
    last = mask[-1]
    z, r = (member[-1] @ w.detach())[last].numpy(), reward[-1][last].numpy()
    corr = spearmanr(z, r).statistic if len(r) > 2 and np.ptp(z) > 0 and np.ptp(r) > 0 else np.nan
    return WeightFit(theta.detach().numpy().copy(), w.detach().numpy().copy(),
                     it if a.search_iters else 0, float(s[-1].detach().sum()), float(current.q),
                     float(theta.grad.norm()), float(corr))
