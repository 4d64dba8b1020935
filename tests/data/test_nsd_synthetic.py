"""NSD-synthetic reader: test-only split, 220/284 stimuli, subject-specific ids, repetition-based ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from visreps.data import DatasetError, open_dataset

try:
    from .published_fixtures import ATLAS_LABELS, build_nsd_synthetic, visreps_home  # noqa: F401
except ImportError:
    from published_fixtures import ATLAS_LABELS, build_nsd_synthetic, visreps_home  # noqa: F401


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd")
    return root, build_nsd_synthetic(root, subjects=("subj01", "subj02"))


def expected(truth, subject, n_stimuli):
    rec = truth["subjects"][subject]
    atlas = rec["atlases"]["prf-visualrois"]
    mask = np.isin(atlas, [ATLAS_LABELS["prf-visualrois"].index(l) + 1 for l in ("V1v", "V1d")]) & rec["brain"]
    xyz = np.argwhere(mask)
    b = rec["betas"][:, xyz[:, 2], xyz[:, 1], xyz[:, 0]].astype(np.float64) / 300
    z = (b - b.mean(axis=0)) / b.std(axis=0)
    order = truth["order"]
    # ncsnr by hand: pooled within-stimulus variance (ddof 1 per stimulus) vs total variance (ddof 1)
    groups = [z[order == s] for s in range(284)]
    noise = sum(((g - g.mean(axis=0)) ** 2).sum(axis=0) for g in groups) / sum(len(g) - 1 for g in groups)
    total = z.var(axis=0, ddof=1)
    ncsnr2 = np.clip(total - noise, 0, None) / noise
    counts = np.array([len(g) for g in groups[:n_stimuli]])
    reps = np.full((n_stimuli, counts.max(), len(xyz)), np.nan)
    for s in range(n_stimuli):
        reps[s, : counts[s]] = groups[s]
    return dict(test=np.stack([g.mean(axis=0) for g in groups[:n_stimuli]]), reps=reps,
                ceiling=ncsnr2 / (ncsnr2 + np.mean(1 / counts)), xyz=xyz)


@pytest.mark.parametrize("n_stimuli", [220, 284])
def test_test_only_responses(synthetic, n_stimuli):
    root, truth = synthetic
    dataset = open_dataset("nsd_synthetic", root, n_stimuli=n_stimuli, regions=["V1", "PPA"])
    assert dataset.test_only
    r = dataset.responses("subj02", "V1")
    want = expected(truth, "subj02", n_stimuli)
    assert r.train.shape == (0, len(want["xyz"])) and len(r.train_ids) == 0
    assert r.n_units == len(want["xyz"])
    np.testing.assert_allclose(r.test, want["test"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.test_repetitions, want["reps"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.noise_ceiling, want["ceiling"], rtol=1e-4, atol=1e-6)
    assert r.test_ids[0] == "nsdsynthetic001" and r.test_ids[219] == "nsdsynthetic220"
    if n_stimuli == 284:
        assert r.test_ids[220] == "nsdsynthetic221_subj02"
        ids = dataset.stimulus_ids()
        assert len(ids) == 220 + 2 * 64 and "nsdsynthetic284_subj01" in ids
    else:
        assert len(dataset.stimulus_ids()) == 220


def test_images_shared_and_subject_specific(synthetic):
    root, _ = synthetic
    dataset = open_dataset("nsd_synthetic", root, n_stimuli=284)
    assert dataset.load_image("nsdsynthetic005").getpixel((0, 0)) == (4, 4, 4)  # grayscale brick -> RGB
    assert dataset.load_image("nsdsynthetic223_subj02").getpixel((0, 0)) == (2, 0, 2)
    with pytest.raises(DatasetError, match="subject suffix"):
        dataset.load_image("nsdsynthetic223")


def test_bad_options_and_missing_files(synthetic, tmp_path):
    root, _ = synthetic
    with pytest.raises(DatasetError, match="n_stimuli must be 220 or 284"):
        open_dataset("nsd_synthetic", root, n_stimuli=100)
    own = tmp_path / "nsd"
    build_nsd_synthetic(own, subjects=("subj01",))
    (own / "nsddata_stimuli/stimuli/nsdsynthetic/nsdsynthetic_colorstimuli_subj01.hdf5").unlink()
    assert open_dataset("nsd_synthetic", own).subjects() == ["subj01"]  # 220 stimuli need no colour file
    with pytest.raises(DatasetError, match="missing file nsddata_stimuli/stimuli/nsdsynthetic/nsdsynthetic_colorstimuli_subj01.hdf5"):
        open_dataset("nsd_synthetic", own, n_stimuli=284)
    (own / "nsddata/experiments/nsdsynthetic/nsdsynthetic_expdesign.mat").unlink()
    with pytest.raises(DatasetError, match="missing file nsddata/experiments/nsdsynthetic/nsdsynthetic_expdesign.mat"):
        open_dataset("nsd_synthetic", own)
