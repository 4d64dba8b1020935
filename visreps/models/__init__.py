"""Models: a small registry of networks trained from scratch, named extraction points, loading trained ones.

- ``create_model(name, num_classes, **kwargs)`` / ``list_models()``: ``custom_cnn``, ``custom_cnn_small``,
  ``timm:<name>`` (see ``visreps.models.registry``).
- ``extraction_points(model)``: the named points of every model (read by ``visreps.activations``)
  (see ``visreps.models.points``).
- ``load(path)`` -> ``LoadedModel``: a local model file, training checkpoint or folder with model.pt
  (see ``visreps.models.files``); ``runs:/`` and ``models:/`` URIs: ``visreps.tracking.load_model``.
- ``build_torchvision_model`` / ``build_timm_model``: torchvision and timm networks with local or cached
  weights, or random ones, with their eval transform (``visreps.models.pretrained``); the eval transform of
  visreps-trained networks: ``visreps.models.transforms``.
"""

from visreps.models.custom_cnn import CustomCNN
from visreps.models.files import (
    LoadedModel,
    atomic_torch_save,
    build_from_metadata,
    load,
    load_file,
    read_weights_file,
    save_model_file,
)
from visreps.models.points import (
    ExtractionError,
    ExtractionPoint,
    extraction_points,
    extraction_spec,
    unwrap_model,
)
from visreps.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelError,
    check_architecture,
    create_model,
    default_image_size,
    list_models,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CustomCNN",
    "ExtractionError",
    "ExtractionPoint",
    "LoadedModel",
    "ModelError",
    "atomic_torch_save",
    "build_from_metadata",
    "check_architecture",
    "create_model",
    "default_image_size",
    "extraction_points",
    "extraction_spec",
    "list_models",
    "load",
    "load_file",
    "read_weights_file",
    "save_model_file",
    "unwrap_model",
]
