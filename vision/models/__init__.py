"""Model registry and architectures."""

from vision.models.registry import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    ModelSpec,
    NormalizedClassifier,
    adapt_first_conv,
    get_model,
    get_spec,
    list_models,
    load_state_dict_file,
    register_model,
)

__all__ = [
    "IMAGENET_MEAN_255",
    "IMAGENET_STD_255",
    "ModelSpec",
    "NormalizedClassifier",
    "adapt_first_conv",
    "get_model",
    "get_spec",
    "list_models",
    "load_state_dict_file",
    "register_model",
]
