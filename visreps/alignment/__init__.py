"""Alignment between model activations and brain/behaviour responses: RDMs, RSA, ridge encoding,
bootstrap CIs, paired comparisons, study-level aggregation over subjects and seeds, rank intervals, noise
ceilings, effective dimensionality, the PCA-reconstruction control, sparse random projection, layer selection.

Pure library code: arrays in (numpy or torch, CPU or GPU), numbers out; no tracking, no file formats.
"""

from visreps.alignment.bootstrap import (
    BootstrapResult,
    PairedComparison,
    Resampling,
    benjamini_hochberg,
    bootstrap_encoding,
    difference_test,
    paired_difference,
    pearson_columns,
    percentile_interval,
)
from visreps.alignment.bootstrap_rsa import (
    bootstrap_rsa,
    bootstrap_rsa_models,
    paired_bootstrap_rsa,
    rsa_resample_scores,
)
from visreps.alignment.ceiling import (
    NoiseCeiling,
    ceiling_r_from_percent,
    encoding_noise_ceiling,
    ncsnr_noise_ceiling,
    normalise_score,
    rsa_split_half_ceiling,
    rsa_subject_ceiling,
    spearman_brown,
    split_half_reliability,
)
from visreps.alignment.compare import (
    COMPARE_METHODS,
    compare_rdms,
    compare_vectors,
    kendall_tau_a_upper,
    kendall_tau_a_vectors,
    pearson_upper,
    rank_average,
    spearman_upper,
    upper_triangle,
)
from visreps.alignment.dimensionality import covariance_eigenvalues, effective_dimensionality, participation_ratio
from visreps.alignment.encoding import (
    DEFAULT_ALPHAS,
    EncodingScore,
    RidgeCVFit,
    Standardizer,
    encoding_score,
    fit_ridge_cv,
    kfold_splits,
)
from visreps.alignment.evaluate import AlignmentResult, evaluate_encoding, evaluate_rsa
from visreps.alignment.projection import SparseProjection, project_features, sparse_random_projection
from visreps.alignment.ranking import RankIntervals, rank_intervals
from visreps.alignment.reconstruction import pca_reconstruction_rdms
from visreps.alignment.rdm import (
    ConstantRowsWarning,
    compute_rdm,
    constant_rows,
    rdm_cosine,
    rdm_euclidean,
    rdm_pearson,
)
from visreps.alignment.selection import LayerSelection, TestSplit, TrainSplit, select_layer
from visreps.alignment.study import (
    RESAMPLING_UNITS,
    DrawIndices,
    default_resampling_unit,
    differences_to,
    draw_indices,
    sampling_draws,
    sampling_scale,
    study_draws,
)
from visreps.alignment.validation import AlignmentInputError

__all__ = [
    "COMPARE_METHODS", "DEFAULT_ALPHAS", "RESAMPLING_UNITS", "DrawIndices",
    "AlignmentInputError", "AlignmentResult", "BootstrapResult", "ConstantRowsWarning", "EncodingScore",
    "LayerSelection", "NoiseCeiling", "PairedComparison", "RankIntervals", "Resampling", "RidgeCVFit", "SparseProjection",
    "Standardizer", "TestSplit", "TrainSplit",
    "benjamini_hochberg", "bootstrap_encoding", "bootstrap_rsa", "bootstrap_rsa_models", "ceiling_r_from_percent",
    "compare_rdms", "compare_vectors", "default_resampling_unit", "difference_test", "differences_to", "draw_indices", "compute_rdm", "constant_rows", "covariance_eigenvalues",
    "effective_dimensionality", "encoding_noise_ceiling", "encoding_score",
    "evaluate_encoding", "evaluate_rsa", "fit_ridge_cv", "kendall_tau_a_upper", "kendall_tau_a_vectors",
    "kfold_splits", "ncsnr_noise_ceiling", "participation_ratio", "rank_intervals", "normalise_score", "paired_bootstrap_rsa", "paired_difference",
    "pca_reconstruction_rdms", "pearson_columns", "pearson_upper", "percentile_interval", "project_features", "rank_average", "rdm_cosine",
    "rdm_euclidean", "rdm_pearson", "rsa_resample_scores", "rsa_split_half_ceiling", "rsa_subject_ceiling",
    "sampling_draws", "sampling_scale", "select_layer", "sparse_random_projection", "study_draws", "spearman_brown", "spearman_upper", "split_half_reliability",
    "upper_triangle",
]
