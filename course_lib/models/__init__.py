"""Video backbones behind one registry: ``create_model(name, **kwargs)``, ``list_models()``."""
from . import c3d, r3d50, resnet3d, s3d, vit  # noqa: F401  (importing registers the models)
from .registry import Backbone, complexity, create_model, input_problem, list_models, register, smallest_input
from .vit import VideoViT


def is_vit(name: str) -> bool:
    """Whether the registered backbone ``name`` is a video ViT (the masked methods need one)."""
    return name in vit.SIZES

__all__ = ["Backbone", "VideoViT", "complexity", "create_model", "input_problem", "is_vit", "list_models", "register",
           "smallest_input"]
