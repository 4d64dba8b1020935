"""The demo data's ground truth checked through train → evaluate: ventral voxels are built from the object
latents, so a network trained on the demo's classes must beat its untrained state on the ventral region; early
voxels are built from local oriented energy, so the trained network's early region must select an earlier point
than its ventral region; and no score may exceed its noise ceiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from visreps.config import load_config
from visreps.data.demo import DemoDataConfig, generate_demo_dataset
from visreps.stages.evaluate import EvaluateConfig, run_evaluate_stage
from visreps.stages.train import run_train_stage
from visreps.tracking import download_artifacts
from visreps.training import TrainConfig

DEMO = DemoDataConfig(n_train_images=1920, image_size=32, n_subjects=2, n_train_stimuli_per_subject=300,
                      n_test_stimuli=120, n_voxels=60, n_images_per_concept=2, behaviour_dims=4)


def _tidy(parent_id: str) -> pd.DataFrame:
    return pd.read_parquet(download_artifacts(parent_id, "results.parquet"))


@pytest.mark.slow
def test_trained_beats_untrained_on_ventral_and_stays_below_the_ceiling(store, tmp_path: Path) -> None:
    demo = generate_demo_dataset(DEMO, root=tmp_path / "demo", progress=False).root
    train = TrainConfig.model_validate({
        "dataset": {"root": str(demo / "train_images")}, "model": {"architecture": "custom_cnn_small", "image_size": 32},
        "epochs": 6, "batch_size": 64, "lr": 3e-3, "warmup_epochs": 1, "num_workers": 0, "device": "cpu",
        "progress": False, "deterministic": True, "experiment": "visreps-ground-truth"})
    run_id = run_train_stage(train)
    scores = {}
    for state, artifact in (("trained", "model"), ("untrained", "model_epoch0")):
        config = load_config(EvaluateConfig, "evaluate", overrides=[
            f"model=runs:/{run_id}/{artifact}", f"dataset_root={demo}", "analysis=both", "n_bootstrap=100",
            "progress=false", "device=cpu", "experiment=visreps-ground-truth"])
        scores[state] = pd.concat([_tidy(parent) for parent in run_evaluate_stage(config).values()])
    trained, untrained = scores["trained"], scores["untrained"]

    def mean(table: pd.DataFrame, region: str, metric: str, analysis: str) -> float:
        chosen = (table.region == region) & (table.metric == metric) & (table.analysis == analysis)
        return float(table[chosen].value.mean())

    for analysis in ("rsa", "encoding"):
        assert mean(trained, "ventral", "score", analysis) > mean(untrained, "ventral", "score", analysis) + 0.05
        assert mean(trained, "early", "selected_point_index", analysis) \
            < mean(trained, "ventral", "selected_point_index", analysis)
    for table in (trained, untrained):
        pivot = table.pivot_table(index=["subject", "region"], columns="metric", values="value")
        assert (pivot.score < pivot.noise_ceiling).all()
        assert np.isfinite(pivot.score).all()
