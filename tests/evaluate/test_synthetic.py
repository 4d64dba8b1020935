"""NSD-synthetic (test stimuli only) takes, per subject and region, the point selected by the finished NSD
evaluation of the same model, found in MLflow; without one it stops with one line naming what to run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.data.published_fixtures import build_nsd, build_nsd_synthetic
from visreps.cli import main
from visreps.config import load_config
from visreps.models import create_model, save_model_file
from visreps.stages.evaluate import EvaluateConfig, run_evaluate_stage
from visreps.tracking import download_artifacts

SETTINGS = ["n_bootstrap=20", "progress=false", "device=cpu", "batch_size=32", "projection_dim=128",
            "points=[conv1_post,conv3_post,fc2_post]", "subjects=[subj01]", "regions=[V1,ventral]", "analysis=rsa"]


@pytest.mark.slow
def test_synthetic_uses_the_nsd_selection(store, tmp_path: Path, capsys) -> None:
    torch.manual_seed(6)
    model = save_model_file(tmp_path / "model.pt", create_model("custom_cnn_small", 4),
                            {"architecture": "custom_cnn_small", "num_classes": 4, "image_size": 32})
    build_nsd(tmp_path / "nsd", subjects=("subj01",), n_shared=40)
    build_nsd_synthetic(tmp_path / "synthetic", subjects=("subj01",))
    synthetic = [f"model={model}", "dataset=nsd_synthetic", f"dataset_root={tmp_path / 'synthetic'}", *SETTINGS]
    assert main(["evaluate", *synthetic]) == 2
    err = capsys.readouterr().err.strip()
    assert "no finished NSD evaluation" in err and "dataset=nsd" in err and len(err.splitlines()) == 1, err
    assert main(["evaluate", *synthetic, "analysis=encoding"]) == 2
    assert "rsa only" in capsys.readouterr().err

    nsd = run_evaluate_stage(load_config(EvaluateConfig, "evaluate", overrides=[
        f"model={model}", "dataset=nsd", f"dataset_root={tmp_path / 'nsd'}", *SETTINGS]))["rsa"]
    chosen = pd.read_parquet(download_artifacts(nsd, "results.parquet")).groupby("region").selected_point.first()
    parent = run_evaluate_stage(load_config(EvaluateConfig, "evaluate", overrides=synthetic))["rsa"]
    tidy = pd.read_parquet(download_artifacts(parent, "results.parquet"))
    assert tidy.groupby("region").selected_point.first().to_dict() == chosen.to_dict()
    scores = tidy[tidy.metric == "score"]
    assert len(scores) == 2 and scores.value.between(-1, 1).all()
    assert store.get_run(parent).data.tags["visreps.complete"] == "true"
