"""Backbones (task classifier), and the AutoAL networks.

The package itself imports no torch: `MODELS` names the backbones (a config check needs
the names only), and the classes load from their modules on first use.
"""
from __future__ import annotations

from typing import Any

from autoal_dist.lazy import LazyRegistry

# name -> builder(input_shape, num_classes, dropout, pretrained=...) -> Classifier
MODELS: LazyRegistry = LazyRegistry({
    "smallcnn": "autoal_dist.models.backbones:build_smallcnn",
    "mlp": "autoal_dist.models.backbones:build_mlp",
    "resnet18": "autoal_dist.models.backbones:build_resnet18",
})
_EXPORTS = {
    "autoal_dist.models.backbones": ("MLP", "Classifier", "ModelSpec", "ResNet18", "SmallCNN",
                                     "auto_model_name", "build_model"),
    "autoal_dist.models.autoal_nets": ("LossPredictor", "SearchNet", "SearchOutput",
                                       "build_fitnet"),
}
__all__ = ["MODELS", *(n for names in _EXPORTS.values() for n in names)]


def __getattr__(name: str) -> Any:  # PEP 562: `from autoal_dist.models import X`, lazily
    import importlib

    for module, names in _EXPORTS.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'autoal_dist.models' has no attribute {name!r}")
