"""Evaluations shared by the compare and dashboard tests: a fine-label, a coarse and an untrained network on a
small demo dataset, evaluated once per session against the real `mlflow server`."""

from __future__ import annotations

import pytest
import torch

from visreps.config import load_config
from visreps.data.demo import DemoDataConfig, generate_demo_dataset
from visreps.models import create_model, save_model_file
from visreps.stages.evaluate import EvaluateConfig, run_evaluate_stage

DEMO = DemoDataConfig(n_train_images=64, image_size=32, n_subjects=2, n_train_stimuli_per_subject=40,
                      n_test_stimuli=30, n_voxels=12, n_images_per_concept=2, behaviour_dims=4)
MODELS = {"fine": {"K": 8, "label_source": "fine", "epoch": 3}, "coarse": {"K": 2, "label_source": "pca_pixels", "epoch": 3},
          "untrained": {"K": 8, "label_source": "fine", "epoch": 0}}


@pytest.fixture(scope="session")
def evaluations(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    root = generate_demo_dataset(DEMO, root=tmp_path_factory.mktemp("demo") / "demo", progress=False).root
    runs = {}
    for index, (name, provenance) in enumerate(MODELS.items()):
        torch.manual_seed(index)
        path = tmp_path_factory.mktemp(name) / "model.pt"
        save_model_file(path, create_model("custom_cnn_small", 4), {"architecture": "custom_cnn_small",
                                                                   "num_classes": 4, "image_size": 32, **provenance})
        config = load_config(EvaluateConfig, "evaluate", overrides=[
            f"model={path}", f"dataset_root={root}", "n_bootstrap=100", "n_rsa_stimuli=30", "progress=false",
            "device=cpu", "projection_dim=256", "experiment=compare-tests", "analysis=both" if name == "coarse" else "analysis=rsa"])
        runs.update({f"{name}-{analysis}": run_id for analysis, run_id in run_evaluate_stage(config).items()})
    patch.undo()
    return runs


@pytest.fixture(scope="module")
def tracking_on_server(mlflow_server: str):
    """MLFLOW_TRACKING_URI points at the real server for one test module (undone after it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    yield mlflow_server
    patch.undo()


