"""Generate the built-in demo dataset (images, synthetic brain responses, behaviour) and log it to MLflow.

The dataset is deterministic from its configuration and cached on disk under ``<home>/data``; the run logs the
generator parameters, a sample image grid, and the split-half noise ceilings of every subject and region. The
run is re-used only while the files are those it recorded (``tree_fingerprint``); otherwise they are generated
again.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from visreps.config import StageConfig, runtime_field
from visreps.data.demo import DemoDataConfig, generate_demo_dataset, sample_image_grid
from visreps.data.generic.reader import GenericDataset
from visreps.stages.common import add_config_arguments, stage_config
from visreps.fingerprints import tree_fingerprint
from visreps.tracking import ensure_tracking_available, reusable_run, stage_run

STAGE = "demo_data"
STAGE_VERSION = 1


class DemoDataStageConfig(DemoDataConfig, StageConfig):
    """The demo generator's parameters plus where the run is tracked."""

    experiment: str = runtime_field("visreps-demo_data")
    force: bool = runtime_field(False, description="regenerate and log again even if an identical run finished")


CONFIG_CLASS = DemoDataStageConfig


def repetition_ceilings(dataset: GenericDataset) -> dict[str, dict[str, float]]:
    """Mean split-half (Spearman–Brown) reliability of each subject's test voxels, per region."""
    from visreps.alignment import split_half_reliability

    ceilings: dict[str, dict[str, float]] = {}
    for subject in dataset.subjects():
        ceilings[subject] = {}
        for region in dataset.regions(subject):
            responses = dataset.responses(subject, region)
            if responses.test_repetitions is None:
                continue
            reliability = split_half_reliability(responses.test_repetitions)
            ceilings[subject][region] = float(np.nanmean(reliability))
    return ceilings


def ceiling_figure(ceilings: dict[str, dict[str, float]]):
    """Bar chart of the split-half noise ceilings, subjects side by side within each region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = sorted({region for per_subject in ceilings.values() for region in per_subject})
    subjects = list(ceilings)
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(regions), 3.2))
    width = 0.8 / max(len(subjects), 1)
    for index, subject in enumerate(subjects):
        values = [ceilings[subject].get(region, np.nan) for region in regions]
        positions = np.arange(len(regions)) + (index - (len(subjects) - 1) / 2) * width
        axis.bar(positions, values, width=width, label=subject)
    axis.set_xticks(np.arange(len(regions)), regions)
    axis.set_ylim(0, 1)
    axis.set_ylabel("split-half reliability\n(Spearman–Brown, mean over voxels)")
    axis.set_title("Demo noise ceilings (test stimuli, 3 repetitions)")
    axis.legend(fontsize=7, ncols=2)
    figure.tight_layout()
    return figure


def run_demo_data_stage(config: DemoDataStageConfig, parent_run_id: str | None = None) -> tuple[str, Path]:
    """Generate (or find) the demo dataset and its run; returns (run id, dataset root)."""
    ensure_tracking_available()
    demo = generate_demo_dataset(config)
    inputs = {"data": tree_fingerprint(demo.root)}
    previous = reusable_run(STAGE, config, STAGE_VERSION, inputs, config.force)
    if previous is not None:
        print(f"demo_data: data at {demo.root}")
        return previous.run_id, demo.root
    if demo.reused:  # files no finished run vouches for (changed, or force=true): generate them afresh
        shutil.rmtree(demo.root)
        demo = generate_demo_dataset(config)
        inputs = {"data": tree_fingerprint(demo.root)}
    with stage_run(
        STAGE, config, STAGE_VERSION,
        tags={"visreps.dataset": "demo", "visreps.data_fingerprint": inputs["data"],
              "visreps.generator": demo.fingerprint},
        run_name=f"demo-seed{config.seed}", parent_run_id=parent_run_id, inputs=inputs,
    ) as run:
        run.log_params({"data.root": str(demo.root)})
        run.log_artifact(demo.root / "generator.json")
        run.log_figure(sample_image_grid(demo.root), "figures/sample_images.png")
        brain = GenericDataset(demo.brain_root)
        ceilings = repetition_ceilings(brain)
        run.log_metrics({f"noise_ceiling.{s}.{r}": v for s, per in ceilings.items() for r, v in per.items()})
        run.log_dict({"split_half_reliability": ceilings, "summary": brain.summary()}, "summary.json")
        run.log_figure(ceiling_figure(ceilings), "figures/noise_ceilings.png")
    print(f"demo_data: run {run.run_id}; data at {demo.root}")
    return run.run_id, demo.root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    run_demo_data_stage(stage_config(DemoDataStageConfig, STAGE, args))
    return 0
