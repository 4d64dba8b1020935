"""Models: a small registry of networks trained from scratch, named extraction points, loading trained ones.

- ``create_model(name, num_classes, **kwargs)`` / ``list_models()``: ``custom_cnn``, ``custom_cnn_small``,
  ``timm:<name>`` (see ``visreps.models.registry``).
- ``extraction_points(model)`` / ``FeatureExtractor(model, points)``: one API for every model
  (see ``visreps.models.points``).
- ``load(uri_or_path)`` -> ``LoadedModel``: a model file, training checkpoint, ``runs:/...`` or ``models:/...``
  (see ``visreps.models.files``). MLflow is imported only for the two URI schemes.
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
    FeatureExtractor,
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
    "FeatureExtractor",
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
