"""Task classifiers with an explicit embed/head split.

`embed(x)` is the expensive trunk; `head(e)` is dropout + linear. Scoring runs
the trunk once and MC dropout re-runs only the head (`mc_head`), with dropout
masks drawn from an explicit generator so they are a function of the batch,
not of the process that happens to run it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from autoal_dist.models import MODELS  # the package's table of the builders below


class Classifier(nn.Module):
    """Base: subclasses build `self.trunk` (-> [n, D]) and set `embedding_dim`."""

    embedding_dim: int
    trunk: nn.Module

    def __init__(self, embedding_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.dropout = float(dropout)
        self.fc = nn.Linear(embedding_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def head(self, e: torch.Tensor) -> torch.Tensor:
        return self.fc(F.dropout(e, self.dropout, self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def mc_head(self, e: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
        """[T, n, C] logits of T dropout masks on fixed embeddings (head-only MC dropout)."""
        keep = 1.0 - self.dropout
        if keep >= 1.0:
            return self.fc(e).unsqueeze(0).expand(samples, -1, -1)
        mask = torch.bernoulli(
            torch.full((samples, *e.shape), keep, dtype=e.dtype, device=e.device),
            generator=generator,
        )
        return self.fc(e.unsqueeze(0) * mask / keep)


class SmallCNN(Classifier):
    """Three conv layers for tiny images (digits 8x8, up to ~16px)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.3, width: int = 32):
        super().__init__(4 * width, num_classes, dropout)
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )


class MLP(Classifier):
    """Two hidden layers for flat feature vectors."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.3, width: int = 256):
        super().__init__(width, num_classes, dropout)
        self.trunk = nn.Sequential(
            nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )


class ResNet18(Classifier):
    """torchvision resnet18 with a 3x3 stride-1 stem and no max-pool for small images."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.3,
                 image_size: int = 32, pretrained: str | None = None):
        super().__init__(512, num_classes, dropout)
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        if pretrained:
            state = torch.load(pretrained, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        if image_size <= 64:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()
        self.trunk = nn.Sequential(net, nn.Flatten())


def build_smallcnn(shape: tuple[int, ...], k: int, dropout: float, **kw: Any) -> Classifier:
    return SmallCNN(shape[2], k, dropout)


def build_mlp(shape: tuple[int, ...], k: int, dropout: float, **kw: Any) -> Classifier:
    return MLP(shape[0], k, dropout)


def build_resnet18(shape: tuple[int, ...], k: int, dropout: float, **kw: Any) -> Classifier:
    return ResNet18(shape[2], k, dropout, image_size=shape[0], pretrained=kw.get("pretrained"))


def auto_model_name(input_shape: tuple[int, ...]) -> str:
    """Flat features -> mlp; images up to 16 px -> smallcnn; larger -> resnet18."""
    if len(input_shape) == 1:
        return "mlp"
    return "smallcnn" if max(input_shape[:2]) <= 16 else "resnet18"


# The smallest height and width each image model trains on, found by building it and running
# a training step and an evaluation: SmallCNN's 2x2 max-pool leaves nothing of a 1-pixel side;
# ResNet-18's small-image stem (stride 1, no max-pool) pads every strided conv, down to 1x1.
MIN_IMAGE_SIDE = {"smallcnn": 2, "resnet18": 1}

PRETRAINED_MODELS = ("resnet18",)  # the models that load a `pretrained:` state dict


def check_model(name: str, input_shape: tuple[int, ...], pretrained: str | None = None) -> str:
    """The model a campaign will build (`auto` resolved), checked against the data's
    `input_shape` before anything is written: flat features need mlp, images an image model
    of at least MIN_IMAGE_SIDE pixels a side, and a `pretrained:` file must load into it.
    Raises ConfigError (one line naming the field); returns the resolved name."""
    from autoal_dist.config import ConfigError

    resolved = auto_model_name(input_shape) if name == "auto" else name
    chosen = f"auto picks {resolved}" if name == "auto" else resolved
    if resolved not in MODELS:
        raise ConfigError("model", f"unknown model {name!r}; allowed: auto, {', '.join(MODELS)}")
    if len(input_shape) == 1 and resolved != "mlp":
        raise ConfigError("model", f"{resolved} takes images, but the dataset holds flat feature "
                          f"vectors of shape {tuple(input_shape)}; use mlp (or auto)")
    if len(input_shape) != 1 and resolved == "mlp":
        raise ConfigError("model", f"mlp takes flat feature vectors, but the dataset holds images "
                          f"of shape {tuple(input_shape)}; use "
                          f"{' or '.join(m for m in MODELS if m != 'mlp')} (or auto)")
    if len(input_shape) == 3:
        h, w, side = input_shape[0], input_shape[1], MIN_IMAGE_SIDE[resolved]
        if min(h, w) < side:
            fits = [m for m, s in MIN_IMAGE_SIDE.items() if min(h, w) >= s]
            raise ConfigError("model", f"{chosen}, which needs images of at least {side}x{side} "
                              f"pixels, but the dataset's are {h}x{w}"
                              + (f"; use {' or '.join(fits)}" if fits else ""))
    if pretrained is not None:
        if resolved not in PRETRAINED_MODELS:
            raise ConfigError("pretrained", f"{chosen}, which loads no pretrained weights (only "
                              f"{', '.join(PRETRAINED_MODELS)} does); drop pretrained")
        import warnings

        try:
            with warnings.catch_warnings():  # its warnings about a foreign file: the line says it
                warnings.simplefilter("ignore")
                state = torch.load(pretrained, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - unpickling errors raise by cause
            raise ConfigError("pretrained", f"{pretrained} is not a PyTorch weights file "
                              "(torch.load with weights_only=True cannot read it)") from None
        try:
            from torchvision.models import resnet18

            resnet18(weights=None).load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - not a dict, missing or misshapen keys
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            reason = " ".join(lines[:2])[:240] if lines else type(e).__name__
            raise ConfigError("pretrained", f"{pretrained} does not load into resnet18 "
                              f"({reason})") from None
    return resolved


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                dropout: float = 0.3, pretrained: str | None = None) -> Classifier:
    if name == "auto":
        name = auto_model_name(input_shape)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: auto, {', '.join(MODELS)}")
    if (name == "mlp") != (len(input_shape) == 1):
        raise ValueError(f"model {name!r} does not fit inputs of shape {input_shape}")
    return MODELS[name](input_shape, num_classes, dropout, pretrained=pretrained)


@dataclass(frozen=True)
class ModelSpec:
    """Enough to rebuild a classifier's architecture in another process (actor, worker)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    dropout: float
    pretrained: str | None = None

    @classmethod
    def resolve(cls, name: str, input_shape: tuple[int, ...], num_classes: int, dropout: float,
                pretrained: str | None = None) -> ModelSpec:
        """`auto` resolved now, so every process builds the same architecture."""
        name = auto_model_name(input_shape) if name == "auto" else name
        return cls(name, tuple(input_shape), num_classes, dropout, pretrained)

    def build(self) -> Classifier:
        return build_model(self.name, self.input_shape, self.num_classes, self.dropout,
                           self.pretrained)
