"""Video backbones behind one registry: ``create_model(name, **kwargs)``, ``list_models()``."""
from . import c3d, r3d50, resnet3d, s3d  # noqa: F401  (importing registers the models)
from .registry import Backbone, complexity, create_model, input_problem, list_models, register, smallest_input

__all__ = ["Backbone", "complexity", "create_model", "input_problem", "list_models", "register", "smallest_input"]
