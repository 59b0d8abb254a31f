"""Backbones (task classifier), and the AutoAL networks."""
from autoal_dist.models.backbones import (
    MODELS, Classifier, MLP, ResNet18, SmallCNN, auto_model_name, build_model,
)

__all__ = ["MODELS", "Classifier", "MLP", "ResNet18", "SmallCNN", "auto_model_name", "build_model"]
