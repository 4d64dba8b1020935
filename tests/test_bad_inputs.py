"""The bad-input corpus: every entry point against broken files, wrong names and an unreachable server.

Each case must end with one clear message naming the problem (the fragments) and the fix, an exit status != 0,
no Python traceback, and no run that looks finished (``visreps.complete=true``) in the store afterwards. Most
cases run in this process through ``visreps.cli.main`` (an exception escaping it is what would print a
traceback); a few run as real ``python -m visreps.cli`` subprocesses to show what reaches the terminal.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from tests.conftest import REPO, free_port, stage_environment
from tests.data.published_fixtures import build_nsd, build_nsd_synthetic, build_things, build_tvsd, write_mat73

pytestmark = pytest.mark.slow  # runs every stage's CLI, a few in subprocesses


@dataclass
class World:
    """The intact inputs every case breaks a copy of, and a folder for the copies."""

    tmp: Path
    demo: Path  # demo root: brain/, behaviour/, train_images/
    model: Path  # a custom_cnn_small model file (32 px)
    nsd: Path
    nsd_synthetic: Path
    tvsd: Path
    things: Path

    def copy(self, source: Path, name: str) -> Path:
        target = self.tmp / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        return target

    def empty(self, name: str) -> Path:
        folder = self.tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut ``path`` to ``fraction`` of its bytes, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    return path


@pytest.fixture(scope="module")
def world(store, tmp_path_factory: pytest.TempPathFactory) -> World:
    import torch

    from visreps.data.demo import DemoDataConfig, generate_demo_dataset
    from visreps.models import create_model, save_model_file

    tmp = tmp_path_factory.mktemp("bad_inputs")
    demo = generate_demo_dataset(DemoDataConfig(
        n_train_images=64, image_size=32, n_subjects=1, n_train_stimuli_per_subject=16, n_test_stimuli=16,
        n_voxels=4, n_images_per_concept=1, behaviour_dims=3), root=tmp / "demo", progress=False).root
    torch.manual_seed(0)
    model = save_model_file(tmp / "model.pt", create_model("custom_cnn_small", 4),
                            {"architecture": "custom_cnn_small", "num_classes": 4, "image_size": 32})
    build_nsd(tmp / "nsd", subjects=("subj01",))
    build_nsd_synthetic(tmp / "nsd_synthetic")
    build_tvsd(tmp / "tvsd", nan_electrode=None)
    build_things(tmp / "things")
    return World(tmp, demo, Path(model), tmp / "nsd", tmp / "nsd_synthetic", tmp / "tvsd", tmp / "things")


# --- the breakages -----------------------------------------------------------------------------------------------
_COPIES = itertools.count()
NSD_BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.hdf5"
EMBEDDING = "spose_embedding_66d_sorted.txt"


def checked(source: str, breaks: Callable[[Path], object], *args: str) -> Callable[[World], list[str]]:
    """A case builder: a copy of ``source`` (nsd, tvsd, things, or brain: the demo's generic brain data) broken by
    ``breaks(root)``, then `visreps datasets check` of it with ``args``."""
    def build(w: World) -> list[str]:
        root = w.copy(w.demo / "brain" if source == "brain" else getattr(w, source), f"{source}_{next(_COPIES)}")
        breaks(root)
        return ["datasets", "check", "generic" if source == "brain" else source, "--root", str(root), *args]
    return build


def edit_npz(path: Path, **changes: Callable[[np.ndarray], np.ndarray]) -> None:
    arrays = dict(np.load(path))
    np.savez(path, **{**arrays, **{name: change(arrays[name]) for name, change in changes.items()}})


def tvsd_image_count(root: Path) -> None:
    write_mat73(root / "monkeyF/THINGS_normMUA.mat", {
        "train_MUA": np.zeros((1024, 23)), "test_MUA": np.zeros((1024, 5)), "test_MUA_reps": np.zeros((1024, 5, 2))})


def tvsd_nan_area(root: Path) -> None:
    with h5py.File(root / "monkeyF/THINGS_normMUA.mat", "r+") as handle:  # stored transposed: (images, electrodes)
        train = handle["train_MUA"][()]
        train[:, :512] = np.nan  # every V1 electrode
        handle["train_MUA"][...] = train


def things_rows_dropped(root: Path) -> None:
    lines = (root / EMBEDDING).read_text().splitlines()
    (root / EMBEDDING).write_text("\n".join(lines[:-3]) + "\n")


def things_nan(root: Path) -> None:
    embedding = np.loadtxt(root / EMBEDDING)
    embedding[2, 5] = np.nan
    np.savetxt(root / EMBEDDING, embedding, fmt="%.6f")


def first_image(folder: Path) -> Path:
    return sorted(folder.iterdir())[0]


def evaluate(w: World, *overrides: str, dataset_root: Path | None = None) -> list[str]:
    return ["evaluate", f"model={w.model}", f"dataset_root={dataset_root or w.demo}", "n_bootstrap=10",
            "n_rsa_stimuli=10", "projection_dim=64", "progress=false", "device=cpu", *overrides]


def broken_demo(w: World, breaks: Callable[[Path], object]) -> Path:
    """A copy of the demo whose last brain stimulus image is broken by ``breaks(path)``."""
    root = w.copy(w.demo, f"demo_{next(_COPIES)}")
    breaks(sorted((root / "brain/images").iterdir())[-1])
    return root


def corrupt_train_image(w: World, name: str, suffix: str) -> Path:
    """The demo's training tree with one image written as a truncated ``suffix`` (jpg or png) file."""
    from PIL import Image

    root = w.copy(w.demo / "train_images", name)
    folder = sorted(root.iterdir())[5]
    original = sorted(folder.iterdir())[0]
    broken = original.with_suffix(f".{suffix}")
    Image.open(original).convert("RGB").resize((64, 64)).save(broken)
    if broken != original:
        original.unlink()
    truncate(broken, 0.3)
    return root


def label_table(w: World, name: str, mutate: Callable) -> Path:
    """A CSV label table for the demo training tree (image, label, split) changed by ``mutate(frame)``."""
    import pandas as pd

    images = sorted(p.relative_to(w.demo / "train_images").as_posix() for p in (w.demo / "train_images").rglob("*.png"))
    frame = pd.DataFrame({"image": images, "label": np.arange(len(images)) % 2, "split": "train"})
    path = w.tmp / (name if "." in name else f"{name}.csv")
    if path.suffix == ".parquet":
        mutate(frame).to_parquet(path)
    else:
        mutate(frame).to_csv(path, index=False)
    return path


def train(w: World, *overrides: str, root: Path | None = None) -> list[str]:
    return ["train", f"dataset.root={root or w.demo / 'train_images'}", "model.architecture=custom_cnn_small",
            "model.image_size=32", "epochs=1", "batch_size=16", "num_workers=0", "device=cpu", "progress=false",
            *overrides]


def labels(w: World, *overrides: str, root: Path | None = None) -> list[str]:
    return ["labels", f"dataset.root={root or w.demo / 'train_images'}", "ks=[2,4]", "compute.num_workers=0",
            "compute.progress=false", "source.pixel_size=4", "figures=false", *overrides]


def score_files(w: World, name: str, break_: str) -> list[str]:
    """`visreps score` inputs (2 layers × 20 train / 12 test stimuli, 5 units) with one of them broken."""
    rng = np.random.default_rng(0)
    folder = w.empty(f"score_{name}")
    features = {split: {f"layer{k}": rng.normal(size=(n, 8)) for k in range(2)} for split, n in (("train", 20), ("test", 12))}
    responses = {"train": rng.normal(size=(20, 5)), "test": rng.normal(size=(12, 5))}
    if break_ == "nan":
        responses["test"][3, 1] = np.nan
    if break_ == "shape":
        responses["test"] = responses["test"][:-1]
    for split in ("train", "test"):
        np.savez(folder / f"{split}.npz", **features[split])
        np.save(folder / f"{split}.npy", responses[split])
    if break_ == "truncated":
        truncate(folder / "train.npz")
    return ["score", "--analysis", "rsa", "--train-features", str(folder / "train.npz"), "--test-features",
            str(folder / "test.npz"), "--train-responses", str(folder / "train.npy"), "--test-responses",
            str(folder / "test.npy"), "--n-bootstrap", "10", "--output", str(folder / "result.json")]


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class Case:
    """One bad input: ``build(world)`` makes the broken copy and returns the argv; the message must hold every
    fragment (case-insensitive); ``server`` points MLFLOW_TRACKING_URI at an address nothing listens on."""

    id: str
    build: Callable[[World], list[str]]
    fragments: tuple[str, ...]
    server: bool = False


CASES = [
    # truncated HDF5 / MATLAB / NIfTI / npz
    Case("nsd-betas-truncated-hdf5", checked("nsd", lambda r: truncate(r / NSD_BETAS), "--deep", "--option",
                                             "regions=[V1]"), ("betas_session01.hdf5", "truncated", "download")),
    Case("nsd-roi-truncated-nifti", checked("nsd", lambda r: truncate(
        r / "nsddata/ppdata/subj01/func1pt8mm/roi/streams.nii.gz", 0.8)), ("streams.nii.gz", "truncated or corrupt", "download it again")),
    Case("nsd-stimuli-truncated-hdf5", checked("nsd", lambda r: truncate(
        r / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", 0.3)), ("nsd_stimuli.hdf5", "truncated", "download")),
    Case("tvsd-truncated-mat", checked("tvsd", lambda r: truncate(r / "monkeyN/THINGS_normMUA.mat"),
                                       "--option", "subjects=N"), ("monkeyN/THINGS_normMUA.mat", "truncated", "download")),
    Case("generic-truncated-npz", checked("brain", lambda r: truncate(r / "responses/sub-01/early.npz")), ("early.npz", "np.savez")),
    Case("score-truncated-npz", lambda w: score_files(w, "truncated", "truncated"), ("train.npz", "np.savez")),
    # wrong shapes
    Case("tvsd-train-count-vs-things_imgs", checked("tvsd", tvsd_image_count, "--option", "subjects=F"),
         ("THINGS_normMUA.mat", "things_imgs.mat", "1024 × 23", "24 images", "download both")),
    Case("things-embedding-rows", checked("things", things_rows_dropped), ("spose_embedding_66d_sorted.txt", "unique_id.txt")),
    Case("generic-test-rows", checked("brain", lambda r: edit_npz(r / "responses/sub-01/ventral.npz",
                                                                  test=lambda a: a[:-2])), ("ventral.npz", "test")),
    Case("score-response-rows", lambda w: score_files(w, "shape", "shape"), ("test",)),
    # NaN responses
    Case("tvsd-area-all-nan", checked("tvsd", tvsd_nan_area, "--option", "subjects=F"), ("monkeyF", "V1", "no usable electrode")),
    Case("things-nan-embedding", checked("things", things_nan), ("spose_embedding_66d_sorted.txt", "row 3", "column 6", "download")),
    Case("generic-region-all-nan", checked("brain", lambda r: edit_npz(
        r / "responses/sub-01/early.npz", train=lambda a: np.full_like(a, np.nan)), "--deep"), ("early.npz", "nan")),
    Case("score-nan-responses", lambda w: score_files(w, "nan", "nan"), ("test.npy", "nan")),
    # empty folders
    Case("datasets-nsd-empty", lambda w: ["datasets", "check", "nsd", "--root", str(w.empty("empty_nsd"))],
         ("nsd_expdesign.mat",)),
    Case("datasets-tvsd-empty", lambda w: ["datasets", "check", "tvsd", "--root", str(w.empty("empty_tvsd"))],
         ("THINGS_normMUA.mat",)),
    Case("datasets-things-empty", lambda w: ["datasets", "check", "things", "--root", str(w.empty("empty_things"))],
         ("spose_embedding_66d_sorted.txt",)),
    Case("evaluate-generic-empty", lambda w: evaluate(w, "dataset=generic", dataset_root=w.empty("empty_generic")),
         ("visreps_dataset.yaml",)),
    Case("labels-empty-tree", lambda w: labels(w, root=w.empty("empty_labels")), ("empty_labels",)),
    Case("train-empty-tree", lambda w: train(w, root=w.empty("empty_train")), ("empty_train",)),
    # corrupt and truncated images
    Case("evaluate-garbage-png", lambda w: evaluate(w, dataset_root=broken_demo(
        w, lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)))), ("stim_00031.png", "not an image", "again")),
    Case("evaluate-truncated-png", lambda w: evaluate(w, dataset_root=broken_demo(w, lambda path: truncate(path, 0.4))),
         ("stim_00031.png", "truncated", "again")),
    Case("datasets-generic-truncated-png", checked("brain", lambda r: truncate(sorted((r / "images").iterdir())[-1], 0.4)),
         ("stim_00031.png", "truncated", "again")),
    Case("labels-truncated-jpeg", lambda w: labels(w, root=corrupt_train_image(w, "labels_jpeg", "jpg")),
         (".jpg", "on_corrupt_image")),
    Case("train-truncated-png", lambda w: train(w, root=corrupt_train_image(w, "train_png", "png")), (".png",)),
    Case("train-truncated-jpeg", lambda w: train(w, root=corrupt_train_image(w, "train_jpeg", "jpg")), (".jpg",)),
    Case("datasets-things-truncated-jpeg", checked("things", lambda r: truncate(first_image(r / "object_images/abacus"))),
         ("abacus_", ".jpg", "truncated", "again")),
    Case("datasets-tvsd-garbage-jpeg", checked("tvsd", lambda r: first_image(r / "THINGS/object_images/acorn").write_bytes(
        b"\xff\xd8" + bytes(64))), ("acorn_", ".jpg", "not an image", "again")),
    # label tables
    Case("train-table-wrong-keys", lambda w: train(w, "labels.source_name=pca_pixels", "labels.table=" + str(label_table(
        w, "wrong_keys", lambda f: f.assign(image="elsewhere/" + f.image)))), ("wrong_keys.csv", "elsewhere/")),
    Case("train-table-missing-column", lambda w: train(w, "labels.source_name=pca_pixels", "labels.table=" + str(
        label_table(w, "no_label", lambda f: f.drop(columns="label")))), ("no_label.csv", "label")),
    Case("train-table-truncated-parquet", lambda w: train(w, "labels.source_name=pca_pixels", "labels.table=" + str(
        truncate(label_table(w, "k2.parquet", lambda f: f)))), ("k2.parquet",)),
    # unknown regions, subjects, datasets
    Case("evaluate-unknown-subject", lambda w: evaluate(w, "subjects=[sub-99]"), ("sub-99", "sub-01")),
    Case("evaluate-unknown-region", lambda w: evaluate(w, "regions=[V9]"), ("V9", "early")),
    Case("datasets-nsd-unknown-region", lambda w: ["datasets", "check", "nsd", "--root", str(w.nsd),
                                                   "--option", "regions=[V9]"], ("V9", "V1")),
    Case("datasets-nsd-unknown-subject", lambda w: ["datasets", "check", "nsd", "--root", str(w.nsd),
                                                    "--option", "subjects=[subj09]"], ("subj09",)),
    Case("datasets-tvsd-unknown-monkey", lambda w: ["datasets", "check", "tvsd", "--root", str(w.tvsd),
                                                    "--option", "subjects=X"], ("monkey 'X'", "monkeyF")),
    Case("evaluate-unknown-dataset", lambda w: evaluate(w, "dataset=mnist"), ("mnist", "nsd_synthetic")),
    # unknown config keys
    Case("evaluate-unknown-key", lambda w: evaluate(w, "n_bootstrapz=3"), ("n_bootstrapz",)),
    Case("labels-unknown-key", lambda w: labels(w, "source.nope=1"), ("source.nope",)),
    Case("train-unknown-key", lambda w: train(w, "optimizer.nope=1"), ("optimizer",)),
    Case("compare-unknown-key", lambda w: ["compare", "nope=1"], ("nope",)),
    Case("sweep-unknown-key", lambda w: ["sweep", "nope=1"], ("nope",)),
    Case("figures-unknown-key", lambda w: ["figures", "nope=1"], ("nope",)),
    Case("score-unknown-key", lambda w: score_files(w, "key", "") + ["n_bootstrapz=3"], ("n_bootstrapz",)),
    # invalid model URIs
    Case("evaluate-unknown-alias", lambda w: evaluate(w, "model=models:/visreps-nope@k8-x-s1"), ("visreps-nope",)),
    Case("evaluate-unknown-run", lambda w: evaluate(w, "model=runs:/0123456789abcdef0123456789abcdef/model"),
         ("0123456789abcdef0123456789abcdef",)),
    Case("evaluate-missing-model-file", lambda w: evaluate(w, f"model={w.tmp / 'absent.pt'}"), ("absent.pt",)),
    Case("evaluate-truncated-model-file", lambda w: evaluate(w, "model=" + str(truncate(Path(
        shutil.copy(w.model, w.tmp / "truncated.pt"))))), ("truncated.pt",)),
    Case("evaluate-unknown-timm", lambda w: evaluate(w, "model=timm:no_such_net_xyz"), ("no_such_net_xyz",)),
    Case("evaluate-unknown-scheme", lambda w: evaluate(w, "model=s3://bucket/model"), ("s3://bucket/model",)),
    Case("labels-unknown-model-source", lambda w: labels(w, "source.kind=model", "source.name=models:/visreps-nope@x"),
         ("visreps-nope",)),
    Case("compare-unknown-run", lambda w: ["compare", "run_ids=[0123456789abcdef0123456789abcdef]"],
         ("0123456789abcdef0123456789abcdef",)),
    Case("figures-unknown-run", lambda w: ["figures", "--out", str(w.tmp / "figs"),
                                           "run_ids=[0123456789abcdef0123456789abcdef]"],
         ("0123456789abcdef0123456789abcdef",)),
    # an unreachable tracking server
    Case("evaluate-unreachable-server", lambda w: evaluate(w), ("MLFLOW_TRACKING_URI", "127.0.0.1"), server=True),
    Case("labels-unreachable-server", lambda w: labels(w), ("MLFLOW_TRACKING_URI", "127.0.0.1"), server=True),
    Case("train-unreachable-server", lambda w: train(w), ("MLFLOW_TRACKING_URI", "127.0.0.1"), server=True),
    Case("compare-unreachable-server", lambda w: ["compare"], ("MLFLOW_TRACKING_URI", "127.0.0.1"), server=True),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_message(case: Case, world: World, capsys, monkeypatch) -> None:
    from visreps.cli import main

    if case.server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", unreachable())
    argv = case.build(world)
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        status = exit_.code
    except Exception as error:  # what the terminal would show as a traceback
        pytest.fail(f"{case.id}: {type(error).__name__} escaped the CLI (a traceback on the terminal): {error}")
    out, err = capsys.readouterr()
    message = (err + out).strip()
    print(f"{case.id} (status {status}): {message}")  # shown with -s or on failure
    assert status not in (0, None), f"{case.id}: exit status {status}; output: {message[-2000:]}"
    assert "Traceback" not in message, message[-3000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, f"{case.id}: not one message:\n{err[-3000:]}"
    for fragment in case.fragments:
        assert fragment.lower() in message.lower(), f"{case.id}: {fragment!r} not in: {message}"


# --- real subprocesses: what reaches the terminal ----------------------------------------------------------------
def _cli(args: list[str], home: Path, tracking_uri: str | None = None, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visreps.cli", *args], cwd=REPO, env=stage_environment(home, tracking_uri),
                          capture_output=True, text=True, timeout=120, **options)


#: cases that fail fast in a fresh process (the stages that import torch and MLflow take 10-15 s to start on 2 busy
#: cores; they reach the terminal through the same ``main``)
SUBPROCESS_CASES = ["tvsd-train-count-vs-things_imgs", "nsd-roi-truncated-nifti", "generic-region-all-nan",
                    "score-nan-responses"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_reaches_the_terminal_without_traceback(case_id: str, world: World, store) -> None:
    case = next(case for case in CASES if case.id == case_id)
    home = Path(os.environ["VISREPS_HOME"])  # the module's store (the `store` fixture)
    result = _cli(case.build(world), home, unreachable() if case.server else None)
    assert result.returncode not in (0, None), result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    for fragment in case.fragments:
        assert fragment.lower() in (result.stderr + result.stdout).lower(), result.stderr[-2000:]


def test_dataset_spellings_and_a_closed_pipe(world: World, tmp_path: Path) -> None:
    """`datasets check nsd-synthetic` is `nsd_synthetic`; output piped into a reader that closes at once ends
    quietly with status 141 (128 + SIGPIPE), no BrokenPipe traceback."""
    command = (f"{sys.executable} -m visreps.cli datasets check NSD-synthetic --root {world.nsd_synthetic} --json "
               "| true; echo status=${PIPESTATUS[0]} >&2")
    result = subprocess.run(["bash", "-c", command], cwd=REPO, env=stage_environment(tmp_path), capture_output=True,
                            text=True, timeout=120)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] in ("status=141", "status=0"), result.stderr
    full = _cli(["datasets", "check", "nsd-synthetic", "--root", str(world.nsd_synthetic)], tmp_path)
    assert full.returncode == 0 and "nsd_synthetic (neural, test only): OK" in full.stdout, full.stderr


def test_no_run_looks_finished(world: World, store) -> None:
    """Nothing the corpus started is tagged complete, and no evaluation even started a run: every bad input of
    an evaluation is found before. A corrupt training image is found in the first pass over the images, inside a
    labels or train run, which ends FAILED (checking every file of an ImageNet-sized tree up front would cost
    minutes of every run)."""
    experiments = [experiment.experiment_id for experiment in store.search_experiments()]
    runs = store.search_runs(experiments) if experiments else []
    assert all(run.data.tags.get("visreps.complete") != "true" for run in runs), [run.data.tags for run in runs]
    left = {(run.data.tags.get("visreps.stage"), run.info.status) for run in runs}
    assert left <= {("labels", "FAILED"), ("train", "FAILED")}, left


def test_corpus_size() -> None:
    total = len(CASES) + len(SUBPROCESS_CASES) + 2
    print(f"bad-input corpus: {len(CASES)} cases in process, {len(SUBPROCESS_CASES)} as subprocesses, "
          f"2 spelling/pipe checks: {total} in all")
    assert len(CASES) >= 55 and total >= 60
