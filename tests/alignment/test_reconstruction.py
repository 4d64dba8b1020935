"""The PCA-reconstruction control against explicit reconstructions with numpy's SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visreps.alignment import rdm_pearson
from visreps.alignment.reconstruction import pca_reconstruction_rdms
from visreps.alignment.validation import AlignmentInputError


def _explicit(features: np.ndarray, m: int) -> np.ndarray:
    mean = features.mean(axis=0)
    u, s, vt = np.linalg.svd(features - mean, full_matrices=False)
    return mean + (u[:, :m] * s[:m]) @ vt[:m]


@pytest.mark.parametrize("shape", [(20, 300), (30, 12)])
def test_rdms_equal_explicit_reconstructions_and_full_rank_equals_the_features(shape) -> None:
    rng = np.random.default_rng(1)
    features = rng.standard_normal(shape) @ np.diag(np.linspace(3, 0.1, shape[1])) + 2.0
    rdms = pca_reconstruction_rdms(features, [1, 2, 5, shape[0]], chunk_columns=7)
    for m in (1, 2, 5):
        expected = rdm_pearson(_explicit(features, m), on_constant="error").numpy()
        np.testing.assert_allclose(rdms[m].numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(rdms[shape[0]].numpy(), rdm_pearson(features).numpy(), atol=1e-9)
    assert not np.allclose(rdms[1].numpy(), rdms[5].numpy())


def test_float32_torch_input_and_bad_components() -> None:
    features = torch.randn(15, 40, generator=torch.Generator().manual_seed(0))
    rdm = pca_reconstruction_rdms(features, [15])[15]
    np.testing.assert_allclose(rdm.numpy(), rdm_pearson(features.double()).numpy(), atol=1e-6)
    with pytest.raises(AlignmentInputError, match="positive"):
        pca_reconstruction_rdms(features, [0])
