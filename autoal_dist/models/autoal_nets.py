"""AutoAL's networks (docs/autoal.md): SearchNet with its loss-prediction head, FitNet.

Both reuse the dataset's classifier family (`build_model`), so SearchNet's trunk
and FitNet see exactly the inputs f sees, with weights of their own.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from autoal_dist.models.backbones import Classifier, build_model

LPL_HIDDEN = 128  # Yoo & Kweon's loss-prediction module: 128 units per feature level


class SearchOutput(NamedTuple):
    weights: torch.Tensor  # [n, M (+1 with the loss head)]: w_m(x) >= 0, summing to 1 over m
    predicted_loss: torch.Tensor | None  # [n]: the loss head's l-hat(x), None without it


class LossPredictor(nn.Module):
    """LPL-style loss prediction (Yoo & Kweon 2019) on SearchNet's trunk features: a small MLP.

    Our trunks end in one pooled feature vector, so LPL's per-level GAP+FC branches
    collapse to a single branch.
    """

    def __init__(self, in_features: int, hidden: int = LPL_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e).squeeze(1)


class SearchNet(nn.Module):
    """g_phi: a trunk of f's family (separate weights) + a linear head giving w_m(x) per candidate.

    The head's outputs go through a softmax over candidates, so w(x) is a distribution
    and z_j = sum_m A[j,m] w_m(x_j) lies in [0, 1]. With raw linear outputs (the paper
    as written), z is unbounded and p = softmax_j(z) saturates to one-hot within a few
    SGD steps at lr 0.05 (the relaxation's gradient scales like 1/std(z)), or every
    weight turns negative so the rows no candidate picked (z = 0, no gradient) rank
    first; both states are absorbing. The released code never met this: its
    gradient is zero.

    With the loss head (the paper's best ablation), the weight head has one
    more output, the weight of the loss head's column in the aggregate. The loss head
    reads *detached* trunk features: it is trained by its own ranking loss and
    optimizer, and the trunk only by SearchNet's objective.
    """

    def __init__(self, model: str, input_shape: tuple[int, ...], num_classes: int,
                 num_candidates: int, use_loss_head: bool, pretrained: str | None = None) -> None:
        super().__init__()
        self.backbone = build_model(model, input_shape, num_classes, dropout=0.0,
                                    pretrained=pretrained)
        self.backbone.fc.requires_grad_(False)  # only `embed` is used; the class head is unused
        dim = self.backbone.embedding_dim
        self.weight_head = nn.Linear(dim, num_candidates + int(use_loss_head))
        self.loss_head = LossPredictor(dim) if use_loss_head else None

    def search_parameters(self) -> list[nn.Parameter]:
        """What SearchNet's optimizer updates: trunk + weight head (not the loss head)."""
        return [*self.backbone.trunk.parameters(), *self.weight_head.parameters()]

    def forward(self, x: torch.Tensor) -> SearchOutput:
        e = self.backbone.embed(x)
        lhat = None if self.loss_head is None else self.loss_head(e.detach())
        return SearchOutput(torch.softmax(self.weight_head(e), dim=1), lhat)


def build_fitnet(model: str, input_shape: tuple[int, ...], num_classes: int, dropout: float,
                 pretrained: str | None = None) -> Classifier:
    """FitNet h_theta (the paper's TaskNet): a fresh classifier of f's family."""
    return build_model(model, input_shape, num_classes, dropout, pretrained)
