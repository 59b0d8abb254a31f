"""The three first-order objectives of the search (the paper's alternating updates;
docs/autoal.md), each with the other nets' outputs detached so one backward pass gives every
net exactly its own gradient.

- SearchNet: -mean(l.detach() * s) + lambda * c (the paper's Eq. 9 sign; the released
  code's count term is a constant with the opposite sign);
- loss head: LPL's margin ranking loss between predicted and true l;
- FitNet: mean(l * s.detach()) + plain CE on L_fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from autoal_dist.autoal.memberships import loss_head_membership
from autoal_dist.autoal.relax import Relaxed, aggregate, relax
from autoal_dist.config import AutoALConfig
from autoal_dist.models.autoal_nets import SearchOutput

LPL_MARGIN = 1.0  # Yoo & Kweon's margin


@dataclass
class SearchLosses:
    searchnet: torch.Tensor
    loss_head: torch.Tensor
    relaxed: Relaxed


def columns(memberships: torch.Tensor, out: SearchOutput, ids: np.ndarray, q: int) -> torch.Tensor:
    """The aggregate's 0/1 columns: the candidates', plus the loss head's top-q of these rows
    (its own pick count q, like a candidate's) when SearchNet has a loss head."""
    if out.predicted_loss is None:
        return memberships
    lhat = out.predicted_loss.detach().double().cpu().numpy()
    return torch.cat([memberships, torch.from_numpy(loss_head_membership(ids, lhat, q))
                      .to(memberships)], dim=1)


def ranking_loss(predicted: torch.Tensor, true: torch.Tensor,
                 margin: float = LPL_MARGIN) -> torch.Tensor:
    """LPL's pairwise loss: rows i and n-1-i form a pair; the higher true loss must be
    predicted higher by `margin`. Rows arrive shuffled, so the pairs are random."""
    half = len(true) // 2
    if half == 0:
        return predicted.sum() * 0.0
    sign = torch.where(true[:half] > true.flip(0)[:half], 1.0, -1.0).to(predicted)
    return F.margin_ranking_loss(predicted[:half], predicted.flip(0)[:half], sign, margin=margin)


def searchnet_objective(out: SearchOutput, memberships: torch.Tensor, loss: torch.Tensor,
                        ids: np.ndarray, r: float, a: AutoALConfig, seed: int,
                        q: int) -> SearchLosses:
    """SearchNet's and the loss head's losses on rows `ids` whose true per-sample loss is
    `loss` (FitNet's cross-entropy); q is the loss head's pick count on these rows."""
    loss = loss.detach()
    relaxed = relax(aggregate(columns(memberships, out, ids, q), out.weights), r, a, seed)
    searchnet = -(loss.double() * relaxed.s).mean() + a.count_weight * relaxed.c
    lh = (ranking_loss(out.predicted_loss, loss) if out.predicted_loss is not None
          else torch.zeros((), device=loss.device))
    return SearchLosses(searchnet, lh, relaxed)


def fitnet_objective(search_loss: torch.Tensor, s: torch.Tensor, fit_logits: torch.Tensor,
                     fit_y: torch.Tensor) -> torch.Tensor:
    """FitNet learns L_fit plus the samples SearchNet would query (weighted by detached s)."""
    return (search_loss * s.detach().to(search_loss)).mean() + F.cross_entropy(fit_logits, fit_y)
