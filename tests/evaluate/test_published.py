"""The evaluate stage on format-faithful fixtures of the published layouts (NSD, TVSD, THINGS): every
(subject, region) gets a complete child run with the dataset's own test set, and a rerun creates no second
result (NSD-synthetic: test_synthetic.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.data.published_fixtures import build_nsd, build_things, build_tvsd
from visreps.config import load_config
from visreps.data import open_dataset
from visreps.models import create_model, save_model_file
from visreps.stages.evaluate import EvaluateConfig, run_evaluate_stage
from visreps.tracking import download_artifacts

SETTINGS = ["n_bootstrap=20", "n_rsa_stimuli=1000", "progress=false", "device=cpu", "batch_size=32",
            "projection_dim=128", "points=[conv1_post,conv3_post,fc2_post]"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(4)
    return save_model_file(tmp_path_factory.mktemp("published_model") / "model.pt", create_model("custom_cnn_small", 4),
                           {"architecture": "custom_cnn_small", "num_classes": 4, "image_size": 32})


@pytest.mark.slow
@pytest.mark.parametrize("dataset, build, analysis, options", [
    ("nsd", lambda root: build_nsd(root, subjects=("subj01",), n_shared=40), "both", ["dataset_options={regions: [V1, ventral]}"]),
    ("tvsd", build_tvsd, "both", ["subjects=[monkeyF]", "regions=[V1, IT]"]),
    ("things", build_things, "rsa", []),
])
def test_published_layout_end_to_end(store, model_file: Path, tmp_path: Path, dataset: str, build, analysis: str,
                                     options: list[str]) -> None:
    root = tmp_path / dataset
    root.mkdir()
    build(root)
    config = load_config(EvaluateConfig, "evaluate", overrides=[
        f"model={model_file}", f"dataset={dataset}", f"dataset_root={root}", f"analysis={analysis}",
        *SETTINGS, *options])
    parents = run_evaluate_stage(config)
    reader = open_dataset(dataset, root, **config.dataset_options)
    for parent_id in parents.values():
        tidy = pd.read_parquet(download_artifacts(parent_id, "results.parquet"))
        pairs = sorted(set(zip(tidy.subject, tidy.region)))
        assert pairs and all(store.get_run(parent_id).data.tags["visreps.complete"] == "true" for _ in pairs)
        for subject, region in pairs:
            children = store.search_runs(
                [store.get_run(parent_id).info.experiment_id],
                filter_string=f"tags.`visreps.parent_run_id` = '{parent_id}' and tags.`visreps.subject` = '{subject}' "
                              f"and tags.`visreps.region` = '{region}'")
            (child,) = children
            tested = pd.read_csv(download_artifacts(child.info.run_id, "test_stimuli.csv")).stimulus.astype(str)
            assert list(tested) == [str(i) for i in reader.responses(subject, region).test_ids]
    assert run_evaluate_stage(config) == parents  # a rerun creates no second result
