"""Coarse labels: PCA median splits of image features, nested for K = 2, 4, ..., 1024 (docs/method.md §1).

Library only (no tracking): feature sources, exact streaming PCA, median-bit labels, label tables and the
files of a labels run. The ``labels`` stage (``visreps.stages.labels``) logs them to MLflow.
"""

from visreps.labels.coarse import (
    MAX_K,
    binary_codes,
    bits_for_k,
    check_ks,
    check_nesting,
    class_sizes,
    coarse_labels,
    median_thresholds,
)
from visreps.labels.derive import CoarseLabelSet, derive_coarse_labels, resolve_n_pcs
from visreps.labels.errors import LabelError
from visreps.labels.pca import CovarianceAccumulator, PCAResult, fix_signs, pca_from_accumulator
from visreps.labels.sources import FeatureSource, ModuleSource, PixelSource
from visreps.labels.streaming import StreamingPCAResult, array_batches, l2_normalise, streaming_pca
from visreps.labels.tables import (
    build_label_table,
    collection_fingerprint,
    label_table_artifact,
    read_label_table,
    subset_collection,
    validate_label_table,
)

__all__ = [
    "MAX_K",
    "CoarseLabelSet",
    "CovarianceAccumulator",
    "FeatureSource",
    "LabelError",
    "ModuleSource",
    "PCAResult",
    "PixelSource",
    "StreamingPCAResult",
    "array_batches",
    "binary_codes",
    "bits_for_k",
    "build_label_table",
    "check_ks",
    "check_nesting",
    "class_sizes",
    "coarse_labels",
    "collection_fingerprint",
    "derive_coarse_labels",
    "fix_signs",
    "l2_normalise",
    "label_table_artifact",
    "median_thresholds",
    "pca_from_accumulator",
    "read_label_table",
    "resolve_n_pcs",
    "streaming_pca",
    "subset_collection",
    "validate_label_table",
]
