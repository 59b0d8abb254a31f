"""Backbones (task classifier), and the AutoAL networks."""
from autoal_dist.models.backbones import (
    MLP,
    MODELS,
    Classifier,
    ModelSpec,
    ResNet18,
    SmallCNN,
    auto_model_name,
    build_model,
)

__all__ = ["MODELS", "Classifier", "MLP", "ModelSpec", "ResNet18", "SmallCNN", "auto_model_name",
           "build_model"]
from autoal_dist.models.autoal_nets import (  # noqa: E402
    LossPredictor,
    SearchNet,
    SearchOutput,
    build_fitnet,
)

__all__ += ["LossPredictor", "SearchNet", "SearchOutput", "build_fitnet"]
