"""Video backbones behind one registry: ``create_model(name, **kwargs)``, ``list_models()``."""
from . import c3d, r3d50, resnet3d, s3d  # noqa: F401  (importing registers the models)
from .registry import Backbone, complexity, create_model, list_models, register

__all__ = ["Backbone", "complexity", "create_model", "list_models", "register"]
