"""NSD reader against a tiny NSD-layout fixture: z-scoring, averaging, ROIs, splits, ids, bad input."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from visreps.data import DatasetError, open_dataset

try:
    from .published_fixtures import ATLAS_LABELS, build_nsd, visreps_home  # noqa: F401
except ImportError:
    from published_fixtures import ATLAS_LABELS, build_nsd, visreps_home  # noqa: F401


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd")
    return root, build_nsd(root)


def label_index(atlas: str, label: str) -> int:
    return ATLAS_LABELS[atlas].index(label) + 1


def expected(truth, subject, atlas, labels, sessions=(1, 2)):
    """The study's preprocessing written out directly from the fixture's arrays."""
    rec = truth["subjects"][subject]
    mask = np.isin(rec["atlases"][atlas], [label_index(atlas, l) for l in labels]) & rec["brain"]
    for s in sessions:
        mask &= rec["valid"][s - 1]
    xyz = np.argwhere(mask)
    z_all, images, constant = [], [], np.zeros(len(xyz), bool)
    for s in sessions:
        b = rec["betas"][s - 1][:, xyz[:, 2], xyz[:, 1], xyz[:, 0]].astype(np.float64) / 300  # (750, Z, Y, X) storage
        std = b.std(axis=0)
        constant |= std == 0
        z_all.append((b - b.mean(axis=0)) / np.where(std == 0, 1, std))
        images.append(rec["trial_images"][(s - 1) * 750: s * 750])
    z, images = np.concatenate(z_all)[:, ~constant], np.concatenate(images)
    seen = np.unique(images)
    shared = np.isin(seen, truth["shared"])
    train_ids, test_ids = seen[~shared], seen[shared]
    train = np.stack([z[images == i].mean(axis=0) for i in train_ids])
    test = np.stack([z[images == i].mean(axis=0) for i in test_ids])
    counts = np.array([(images == i).sum() for i in test_ids])
    reps = np.full((len(test_ids), counts.max(), z.shape[1]), np.nan)
    for row, i in enumerate(test_ids):
        reps[row, : counts[row]] = z[images == i]
    ncsnr = rec["ncsnr"][tuple(xyz[~constant].T)].astype(np.float64)
    ceiling = ncsnr**2 / (ncsnr**2 + np.mean(1 / counts))
    return dict(xyz=xyz[~constant], dropped=xyz[constant], train_ids=train_ids, test_ids=test_ids,
                train=train, test=test, reps=reps, ceiling=ceiling)


def load(root, region, subject="subj01", **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        responses = open_dataset("nsd", root, **options).responses(subject, region)
    return responses, [str(w.message) for w in caught]


@pytest.mark.parametrize("region,atlas,labels", [("V1", "prf-visualrois", ["V1v", "V1d"]),
                                                  ("FFA", "floc-faces", ["FFA-1", "FFA-2"]),
                                                  ("ventral", "streams", ["ventral"])])
def test_responses_match_the_study_preprocessing(nsd, region, atlas, labels):
    root, truth = nsd
    r, _ = load(root, region)
    want = expected(truth, "subj01", atlas, labels)
    assert list(r.train_ids) == [f"nsd{i:05d}" for i in want["train_ids"]]
    assert list(r.test_ids) == [f"nsd{i:05d}" for i in want["test_ids"]]
    np.testing.assert_array_equal(r.info["voxel_xyz"], want["xyz"])
    np.testing.assert_allclose(r.train, want["train"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.test, want["test"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.test_repetitions, want["reps"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.noise_ceiling, want["ceiling"], rtol=1e-5)
    assert r.train.dtype == np.float32 and r.train.shape == (len(want["train_ids"]), len(want["xyz"]))


def test_constant_and_invalid_voxels_are_dropped_and_reported(nsd):
    root, truth = nsd
    r, messages = load(root, "V1")
    assert r.info["dropped_units"] == [list(truth["subjects"]["subj01"]["constant_xyz"])]
    assert r.info["n_units_original"] == r.n_units + 1
    assert r.info["excluded_outside_valid_mask"] >= 1  # the voxel invalid in session 2 (and any outside the brain)
    assert any("dropped 1 voxel" in m for m in messages)
    assert tuple(truth["subjects"]["subj01"]["invalid_xyz"]) not in {tuple(v) for v in r.info["voxel_xyz"]}


def test_stim_info_csv_gives_the_same_responses(nsd):
    root, _ = nsd
    a, _ = load(root, "V2", design="expdesign", cache=False)
    b, _ = load(root, "V2", design="stim_info", cache=False)
    np.testing.assert_array_equal(a.train_ids, b.train_ids)
    np.testing.assert_array_equal(a.test_ids, b.test_ids)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.test_repetitions, b.test_repetitions)


def test_split_of_a_subject_does_not_depend_on_the_others(nsd):
    root, truth = nsd
    alone = open_dataset("nsd", root, subjects=["subj01"], regions=["V3"])
    both = open_dataset("nsd", root, subjects="subj01,subj02", regions=["V3"])
    assert both.subjects() == ["subj01", "subj02"]
    r1, r2 = alone.responses("subj01", "V3"), both.responses("subj01", "V3")
    np.testing.assert_array_equal(r1.test_ids, r2.test_ids)
    other = both.responses("subj02", "V3")
    assert set(other.train_ids).isdisjoint(r1.train_ids)  # own images never leak between subjects
    shared = {f"nsd{i:05d}" for i in truth["shared"]}
    assert set(r1.test_ids) <= shared and set(r1.train_ids).isdisjoint(shared)
    assert set(alone.stimulus_ids()) == set(r1.train_ids) | set(r1.test_ids)


def test_sessions_option(nsd):
    root, truth = nsd
    r, _ = load(root, "hV4", sessions=[1], cache=False)
    want = expected(truth, "subj01", "prf-visualrois", ["hV4"], sessions=(1,))
    np.testing.assert_allclose(r.train, want["train"], rtol=1e-5, atol=1e-5)
    assert r.info["sessions"] == [1]
    assert open_dataset("nsd", root, sessions="1-2").sessions["subj01"] == [1, 2]
    with pytest.raises(DatasetError, match="sessions 1..40"):
        open_dataset("nsd", root, sessions=[41])
    with pytest.raises(DatasetError, match="betas_session03.hdf5"):
        open_dataset("nsd", root, sessions=[3])


def test_images_are_rows_of_imgbrick(nsd):
    root, _ = nsd
    dataset = open_dataset("nsd", root, regions=["V1"])
    assert dataset.load_image("nsd00300").getpixel((0, 0)) == (300 % 256, 300 // 256, 0)
    with pytest.raises(DatasetError):
        dataset.load_image("coco123")


def test_unknown_subject_region_and_custom_region(nsd):
    root, truth = nsd
    dataset = open_dataset("nsd", root, regions=["V1", "prf-visualrois:V1v"])
    with pytest.raises(DatasetError, match="unknown region 'V4'"):
        dataset.responses("subj01", "V4")
    with pytest.raises(DatasetError, match="unknown subject"):
        dataset.responses("subj05", "V1")
    with pytest.raises(DatasetError, match="unknown region"):
        open_dataset("nsd", root, regions=["MT"])
    with pytest.warns(UserWarning, match="dropped 1 voxel"):
        v1v = dataset.responses("subj01", "prf-visualrois:V1v")
    with pytest.warns(UserWarning, match="dropped 1 voxel"):
        v1 = dataset.responses("subj01", "V1")
    assert {tuple(x) for x in v1v.info["voxel_xyz"]} < {tuple(x) for x in v1.info["voxel_xyz"]}


def test_missing_file_is_named_relative_to_root(nsd, tmp_path):
    root, _ = nsd
    with pytest.raises(DatasetError, match=r"missing file nsddata_betas/ppdata/subj03/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01\.hdf5"):
        open_dataset("nsd", root, subjects=["subj03"])
    with pytest.raises(DatasetError, match=r"missing file nsddata/ppdata/subj01/func1pt8mm/roi/lh\.prf-visualrois\.nii\.gz"):
        open_dataset("nsd", root, hemisphere="lh", regions=["V1"])


@pytest.fixture()
def own_nsd(tmp_path):
    root = tmp_path / "nsd"
    return root, build_nsd(root, subjects=("subj01",), constant_voxel=False, invalid_voxel=False)


def test_label_missing_from_table(own_nsd):
    root, _ = own_nsd
    table = root / "nsddata/freesurfer/subj01/label/floc-places.mgz.ctab"
    table.write_text("0 Unknown\n1 OPA\n3 RSC\n")
    dataset = open_dataset("nsd", root, regions=["PPA"])
    with pytest.raises(DatasetError, match=r"'PPA' is not in the label table .*floc-places\.mgz\.ctab"):
        dataset.responses("subj01", "PPA")


def test_truncated_betas_file(own_nsd):
    root, _ = own_nsd
    path = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.hdf5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    dataset = open_dataset("nsd", root, regions=["V1"])
    with pytest.raises(DatasetError, match="betas_session02.hdf5.*truncated"):
        dataset.summary()
    with pytest.raises(DatasetError, match="truncated"):
        dataset.responses("subj01", "V1")


def test_betas_in_nifti_order_are_refused(own_nsd):
    root, truth = own_nsd
    path = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.hdf5"
    with h5py.File(path, "w") as handle:  # (750, X, Y, Z): not the published (750, Z, Y, X)
        handle.create_dataset("betas", data=truth["subjects"]["subj01"]["betas"][0].transpose(0, 3, 2, 1))
    with pytest.raises(DatasetError, match=r"shape \(750, 6, 5, 4\), expected \(750, 4, 5, 6\)"):
        open_dataset("nsd", root, regions=["V1"]).responses("subj01", "V1")


def test_empty_region_is_one_clear_error(own_nsd):
    root, _ = own_nsd
    table = root / "nsddata/freesurfer/subj01/label/floc-faces.mgz.ctab"
    table.write_text(table.read_text() + "9 EBA-test\n")
    dataset = open_dataset("nsd", root, regions=["V1", "floc-faces:EBA-test"])
    with pytest.raises(DatasetError, match="no usable voxel"):
        dataset.responses("subj01", "floc-faces:EBA-test")
    assert dataset.responses("subj01", "V1").n_units > 0
    assert any("EBA-test" in w for w in dataset.summary()["warnings"])


def test_design_and_ceiling_options(own_nsd):
    root, _ = own_nsd
    r = open_dataset("nsd", root, regions=["V1"], noise_ceiling=False, cache=False).responses("subj01", "V1")
    assert r.noise_ceiling is None and r.info["noise_ceiling_definition"] == "none"
    (root / "nsddata/experiments/nsd/nsd_expdesign.mat").unlink()
    assert open_dataset("nsd", root, regions=["V1"]).design_file.name == "nsd_stim_info_merged.csv"
    with pytest.raises(DatasetError, match="missing file nsddata/experiments/nsd/nsd_expdesign.mat"):
        open_dataset("nsd", root, design="expdesign")
    (root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv").unlink()
    with pytest.raises(DatasetError, match="nsd_stim_info_merged.csv would do as well"):
        open_dataset("nsd", root)


def test_design_pointing_beyond_the_images(own_nsd):
    root, _ = own_nsd
    with h5py.File(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "w") as handle:
        handle.create_dataset("imgBrick", data=np.zeros((50, 4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="imgBrick of nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5 has 50 images"):
        open_dataset("nsd", root)
