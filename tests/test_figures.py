"""The figure functions on hand-made tidy frames: what each trace holds is computed by hand here."""

from __future__ import annotations

import pandas as pd
import pytest

from visreps import figures


def _condition(role: str, source: str, k: float | None, seed: str = "1") -> dict[str, object]:
    name = {"reference": "fine K=8 net", "untrained": "untrained net"}.get(role, f"{source} K={k} net")
    return {"condition": name, "role": role, "label_source": source, "K": k, "architecture": "net", "seed": seed,
            "run_id": f"{name}-{seed}"}


def test_subject_figure_averages_seeds_per_subject_and_k() -> None:
    rows = []
    for subject, offset in (("s1", 0.0), ("s2", 0.5)):
        for k, seed, score in ((2, "1", 0.1), (2, "2", 0.3), (4, "1", 0.4)):
            rows.append({"subject": subject, "region": "V1", "measure": "raw", "score": score + offset,
                         **_condition("condition", "pixels", k, seed)})
        rows.append({"subject": subject, "region": "V1", "measure": "raw", "score": 0.9 + offset, **_condition("reference", "fine", 8)})
    figure = figures.subject_figure(pd.DataFrame(rows), "raw")
    traces = {trace.name: trace for trace in figure.data}
    assert list(traces["s1 pixels"].x) == [2, 4] and list(traces["s1 pixels"].y) == pytest.approx([0.2, 0.4])
    assert list(traces["s2 pixels"].y) == pytest.approx([0.7, 0.9])
    assert list(traces["s2 reference"].y) == pytest.approx([1.4, 1.4])
    with pytest.raises(ValueError, match="normalised"):
        figures.subject_figure(pd.DataFrame(rows), "normalised")


def test_selection_figure_stars_the_point_selected_most_often_not_the_best_mean() -> None:
    rows = []
    for seed, chosen in (("1", 0), ("2", 0)):
        for index, score in enumerate((0.2, 0.5, 0.4)):
            rows.append({"region": "IT", "point_index": index, "point": f"layer{index}", "selection_score": score + float(seed),
                         "n_selected": 3 if index == chosen else 0, "n_subjects": 3, **_condition("condition", "pixels", 2, seed)})
    figure = figures.selection_figure(pd.DataFrame(rows))
    curve, star = figure.data
    assert list(curve.y) == pytest.approx([1.7, 2.0, 1.9]), "mean over seeds"
    assert list(star.x) == [0] and star.y[0] == pytest.approx(1.7) and star.marker.symbol == "star"
    assert list(figure.layout.xaxis.ticktext) == ["layer0", "layer1", "layer2"]


def test_training_figure_has_one_panel_per_logged_curve_and_a_line_per_network() -> None:
    rows = [{"epoch": epoch, "train_loss": 2.0 / (epoch + 1), "heldout_accuracy": 0.1 * epoch, "model_run_id": run,
             **_condition("condition", "pixels", k)} for run, k in (("a", 2), ("b", 8)) for epoch in range(3)]
    figure = figures.training_figure(pd.DataFrame(rows))
    assert [annotation.text for annotation in figure.layout.annotations] == ["train loss", "heldout accuracy"]
    assert len(figure.data) == 2 * 2 and list(figure.data[0].y) == pytest.approx([2.0, 1.0, 2 / 3])
    assert figure.data[0].line.color != figure.data[2].line.color, "K sets the colour"


def test_sweep_history_keeps_the_best_so_far_in_the_objectives_direction() -> None:
    trials = pd.DataFrame({"number": [0, 1, 2, 3], "state": ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"],
                           "accuracy": [0.3, None, 0.2, 0.6]})
    maximised = figures.sweep_history_figure(trials, "accuracy", "maximize")
    assert list(maximised.data[1].y) == [0.3, 0.3, 0.6] and "1 pruned" in maximised.layout.title.text
    assert list(figures.sweep_history_figure(trials, "accuracy", "minimize").data[1].y) == [0.3, 0.2, 0.2]
    importances = pd.DataFrame({"objective": ["accuracy"] * 2, "parameter": ["K", "lr"], "importance": [0.8, 0.2]})
    bars = figures.importance_figure(importances).data[0]
    assert list(bars.y) == ["lr", "K"] and list(bars.x) == [0.2, 0.8]


def test_coarseness_marks_each_k_below_the_reference_at_its_interval() -> None:
    rows = [{"region": "V1", "measure": "raw", "mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1,
             "below_reference": below, **_condition("condition", "pixels", k)}
            for k, mean, below in ((2, 0.2, True), (4, 0.5, False))]
    rows.append({"region": "V1", "measure": "raw", "mean": 0.6, "ci_low": 0.55, "ci_high": 0.65, "below_reference": False,
                 **_condition("reference", "fine", 8)})
    traces = {trace.name: trace for trace in figures.coarseness_figure(pd.DataFrame(rows)).data}
    assert list(traces["pixels: below reference"].x) == [2] and traces["pixels: below reference"].y[0] == pytest.approx(0.1)
    assert list(traces["reference: fine K=8 net"].y) == [0.6, 0.6]
