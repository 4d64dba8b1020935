"""Figures of a study as pure functions: a tidy DataFrame in, a Plotly figure out (re-used by the dashboard).

``coarseness_figure`` takes the comparison table of ``visreps compare`` (docs/evaluation.md, "Comparisons"),
``reconstruction_figure`` its reconstruction table, ``dimensionality_figure``, ``subject_figure``,
``selection_figure`` and ``training_figure`` its dimensionality, subjects, selection and training tables;
``sweep_history_figure`` and ``importance_figure`` a sweep run's trials and importances tables;
``export_figures`` writes figures as self-contained HTML and PNG/SVG/PDF.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: one colour per label source, in sorted order
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _interval_bars(centre: pd.Series, low: pd.Series, high: pd.Series) -> dict:
    """Plotly error bars from ``low`` to ``high`` around ``centre`` (asymmetric)."""
    return {"type": "data", "symmetric": False, "array": high - centre, "arrayminus": centre - low}


def _score_panels_layout(figure, measure: str, title: str, width: int, height: int):
    """Title, size and the score axis (raw or normalised by the noise ceiling) of a figure of region panels."""
    figure.update_yaxes(title_text="score / noise ceiling" if measure == "normalised" else "score", row=1, col=1)
    figure.update_layout(title=title, template="plotly_white", width=width, height=height)
    return figure


def coarseness_figure(table: pd.DataFrame, measure: str = "raw", title: str = ""):
    """Score vs K per label source with CIs (one panel per region), the reference and untrained levels as
    lines with their CI bands, and a mark (×) on every K significantly below the reference (q < alpha)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = table[table.measure == measure]
    if rows.empty:
        raise ValueError(f"the comparison table has no rows for measure {measure!r}")
    regions = list(dict.fromkeys(rows.region))
    figure = make_subplots(rows=1, cols=len(regions), subplot_titles=regions, shared_yaxes=True)
    for column, region in enumerate(regions, start=1):
        here = rows[rows.region == region]
        coarse = here[here.role == "condition"]
        ks = np.sort(coarse.K.dropna().unique().astype(float))
        span = [ks.min() / 1.3, ks.max() * 1.3] if ks.size else [1, 2]
        for index, (source, group) in enumerate(coarse.groupby("label_source", sort=True)):
            group = group.sort_values("K")
            colour = COLOURS[index % len(COLOURS)]
            figure.add_trace(go.Scatter(
                x=group.K, y=group["mean"], mode="lines+markers", name=str(source), legendgroup=str(source),
                showlegend=column == 1, line={"color": colour},
                error_y=_interval_bars(group["mean"], group.ci_low, group.ci_high)), row=1, col=column)
            below = group[group.get("below_reference", pd.Series(False, index=group.index)).astype(bool)]
            if len(below):
                figure.add_trace(go.Scatter(x=below.K, y=below.ci_low, mode="markers", marker_symbol="x",
                                            marker={"color": colour, "size": 9}, name=f"{source}: below reference",
                                            legendgroup=str(source), showlegend=column == 1), row=1, col=column)
        for role, dash in (("reference", "dash"), ("untrained", "dot")):
            level = here[here.role == role]
            if level.empty:
                continue
            level = level.iloc[0]
            figure.add_trace(go.Scatter(x=span + span[::-1], y=[level.ci_high] * 2 + [level.ci_low] * 2, fill="toself", mode="lines",
                                        line={"width": 0}, fillcolor="rgba(128,128,128,0.15)", hoverinfo="skip",
                                        showlegend=False), row=1, col=column)
            figure.add_trace(go.Scatter(x=span, y=[level["mean"]] * 2, mode="lines", line={"color": "grey", "dash": dash},
                                        name=f"{role}: {level.condition}", legendgroup=role, showlegend=column == 1),
                             row=1, col=column)
        if measure == "raw" and "ceiling_low" in here and here.ceiling_low.notna().any():
            low, high = float(here.ceiling_low.min()), float(here.ceiling_high.max())
            figure.add_trace(go.Scatter(x=span + span[::-1], y=[high, high, low, low], fill="toself", mode="lines", line={"width": 0},
                                        fillcolor="rgba(44,160,44,0.12)", name="noise ceiling (subjects' range)",
                                        legendgroup="ceiling", showlegend=column == 1), row=1, col=column)
        figure.update_xaxes(type="log", title_text="K (classes)", row=1, col=column)
    return _score_panels_layout(figure, measure, title or f"alignment vs K ({measure})", 420 * len(regions) + 200, 420)


def reconstruction_figure(reconstruction: pd.DataFrame, comparison: pd.DataFrame | None = None,
                          measure: str = "raw", title: str = ""):
    """The PCA-reconstruction control: score vs M (components kept) of the reference's rebuilt activations with
    CIs, the reference level with its band, and (from ``comparison``) each label source's score vs K on the
    same axis, so a coarse network at K can be set against the reference at M ≈ K."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = reconstruction[(reconstruction.measure == measure)]
    if rows.empty:
        raise ValueError(f"the reconstruction table has no rows for measure {measure!r}")
    regions = list(dict.fromkeys(rows.region))
    figure = make_subplots(rows=1, cols=len(regions), subplot_titles=regions, shared_yaxes=True)
    for column, region in enumerate(regions, start=1):
        here = rows[rows.region == region]
        rebuilt = here[here.components.notna()].sort_values("components")
        figure.add_trace(go.Scatter(
            x=rebuilt.components, y=rebuilt["mean"], mode="lines+markers", name="reference rebuilt from M PCs",
            legendgroup="rebuilt", showlegend=column == 1, line={"color": "black"},
            error_y=_interval_bars(rebuilt["mean"], rebuilt.ci_low, rebuilt.ci_high)), row=1, col=column)
        below = rebuilt[rebuilt.get("below_reference", pd.Series(False, index=rebuilt.index)).astype(bool)]
        figure.add_trace(go.Scatter(x=below.components, y=below.ci_low, mode="markers", marker_symbol="x",
                                    marker={"color": "black", "size": 9}, name="below reference (q < alpha)",
                                    legendgroup="rebuilt", showlegend=column == 1), row=1, col=column)
        span = [0.8, float(max(rebuilt.components.max(), 2)) * 1.25]
        if comparison is not None:
            coarse = comparison[(comparison.measure == measure) & (comparison.region == region)
                                & (comparison.role == "condition")]
            for index, (source, group) in enumerate(coarse.groupby("label_source", sort=True)):
                group = group.sort_values("K")
                span[1] = max(span[1], float(group.K.max()) * 1.25)
                figure.add_trace(go.Scatter(x=group.K, y=group["mean"], mode="markers", name=f"{source} (at K)",
                                            marker={"color": COLOURS[index % len(COLOURS)], "symbol": "diamond"},
                                            legendgroup=str(source), showlegend=column == 1), row=1, col=column)
        reference = here[here.role == "reference"]
        if len(reference):
            level = reference.iloc[0]
            figure.add_trace(go.Scatter(x=span + span[::-1], y=[level.ci_high] * 2 + [level.ci_low] * 2,
                                        fill="toself", mode="lines", line={"width": 0}, fillcolor="rgba(128,128,128,0.15)",
                                        hoverinfo="skip", showlegend=False), row=1, col=column)
            figure.add_trace(go.Scatter(x=span, y=[level["mean"]] * 2, mode="lines", line={"color": "grey", "dash": "dash"},
                                        name=f"reference: {level.condition}", legendgroup="reference",
                                        showlegend=column == 1), row=1, col=column)
        figure.update_xaxes(type="log", title_text="M (components) · K (classes)", row=1, col=column)
    return _score_panels_layout(figure, measure, title or f"PCA-reconstruction control ({measure})", 420 * len(regions) + 260, 420)


def dimensionality_figure(table: pd.DataFrame, title: str = ""):
    """Effective dimensionality vs K per label source at each network's most often selected point (mean over
    seeds), the reference and untrained networks as levels; ``table`` is compare's ``dimensionality.csv``."""
    import plotly.graph_objects as go

    chosen = table[table.most_selected.astype(bool)]
    if chosen.empty:
        raise ValueError("the dimensionality table has no selected points")
    figure = go.Figure()
    coarse = chosen[chosen.role == "condition"]
    ks = np.sort(coarse.K.dropna().unique().astype(float))
    span = [ks.min() / 1.3, ks.max() * 1.3] if ks.size else [1, 2]
    for index, (source, group) in enumerate(coarse.groupby("label_source", sort=True)):
        means = group.groupby("K").effective_dimensionality.agg(["mean", "min", "max"]).reset_index()
        figure.add_trace(go.Scatter(x=means.K, y=means["mean"], mode="lines+markers", name=str(source),
                                    line={"color": COLOURS[index % len(COLOURS)]},
                                    error_y=_interval_bars(means["mean"], means["min"], means["max"])))
    for role, dash in (("reference", "dash"), ("untrained", "dot")):
        level = chosen[chosen.role == role]
        if len(level):
            figure.add_trace(go.Scatter(x=span, y=[level.effective_dimensionality.mean()] * 2, mode="lines",
                                        line={"color": "grey", "dash": dash}, name=f"{role}: {level.condition.iloc[0]}"))
    figure.update_xaxes(type="log", title_text="K (classes)")
    figure.update_yaxes(title_text="effective dimensionality (participation ratio)")
    figure.update_layout(title=title or "effective dimensionality vs K (most often selected point; bars: seeds' range)",
                         template="plotly_white", width=720, height=420)
    return figure


def export_figures(figures: dict[str, object], folder, formats: list[str], plotlyjs: str = "inline") -> str | None:
    """Write each figure as ``<folder>/<name>.<format>``: HTML (plotly.js ``inline`` = works offline, or ``cdn``)
    and PNG/SVG/PDF in one Kaleido session. Returns None, or why the static formats could not be written (Kaleido
    needs a Chromium: Debian ``apt-get install chromium``); the HTML files are written in every case."""
    from pathlib import Path

    import plotly.io as pio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if "html" in formats:
        for name, figure in figures.items():
            figure.write_html(folder / f"{name}.html", include_plotlyjs=True if plotlyjs == "inline" else "cdn")
    static = [(figure, folder / f"{name}.{suffix}") for name, figure in figures.items()
              for suffix in formats if suffix != "html"]
    if not static:
        return None
    try:
        pio.write_images([figure for figure, _ in static], [path for _, path in static])
        missing = [(figure, path) for figure, path in static if not path.is_file() or path.stat().st_size == 0]
        if missing:  # Kaleido has been seen to drop one image of a batch without an error: those once more
            pio.write_images([figure for figure, _ in missing], [path for _, path in missing])
        missing = [path.name for _, path in static if not path.is_file() or path.stat().st_size == 0]
        if missing:
            raise RuntimeError(f"Kaleido wrote no {', '.join(missing)}")
    except Exception as error:  # Kaleido missing, or no Chromium for it: the HTML stands
        for _, path in static:
            path.unlink(missing_ok=True)
        return f"static figures ({', '.join(sorted(set(formats) - {'html'}))}) not written: {type(error).__name__}: " \
               f"{str(error).splitlines()[0] if str(error) else ''} (needs kaleido and Chromium: apt-get install chromium)"
    return None


def _k_colour(k: float | None, ks: list[float]) -> str:
    """A Viridis colour for ``k`` on the log scale spanned by ``ks`` (grey for networks without K)."""
    from plotly.colors import sample_colorscale

    if k is None or not np.isfinite(k) or not ks:
        return "grey"
    low, high = np.log2(min(ks)), np.log2(max(ks))
    return sample_colorscale("Viridis", [0.0 if high == low else float((np.log2(k) - low) / (high - low)) * 0.9])[0]


#: one dash per label source, in sorted order
DASHES = ["solid", "dashdot", "longdash", "dash", "dot"]


def subject_figure(subjects: pd.DataFrame, measure: str = "raw", title: str = ""):
    """Per subject: score vs K per label source (mean over seeds; one panel per region, one colour per subject,
    one dash per label source), the subject's reference (dashed) and untrained (dotted) levels; ``subjects`` is
    compare's ``subjects`` table."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = subjects[subjects.measure == measure]
    if rows.empty:
        raise ValueError(f"the subjects table has no rows for measure {measure!r}")
    regions, names = list(dict.fromkeys(rows.region)), sorted(rows.subject.unique())
    sources = sorted(rows[rows.role == "condition"].label_source.dropna().unique())
    figure = make_subplots(rows=1, cols=len(regions), subplot_titles=regions, shared_yaxes=True)
    for column, region in enumerate(regions, start=1):
        here = rows[rows.region == region]
        ks = np.sort(here[here.role == "condition"].K.dropna().unique().astype(float))
        span = [ks.min() / 1.3, ks.max() * 1.3] if ks.size else [1, 2]
        for index, subject in enumerate(names):
            colour, mine = COLOURS[index % len(COLOURS)], here[here.subject == subject]
            for order, source in enumerate(sources):
                means = mine[(mine.role == "condition") & (mine.label_source == source)].groupby("K").score.mean()
                figure.add_trace(go.Scatter(x=means.index, y=means.values, mode="lines+markers", name=f"{subject} {source}",
                                            legendgroup=subject, showlegend=column == 1,
                                            line={"color": colour, "dash": DASHES[order % len(DASHES)]}), row=1, col=column)
            for role, dash in (("reference", "dash"), ("untrained", "dot")):
                level = mine[mine.role == role].score
                if len(level):
                    figure.add_trace(go.Scatter(x=span, y=[level.mean()] * 2, mode="lines", name=f"{subject} {role}",
                                                line={"color": colour, "dash": dash, "width": 1}, legendgroup=subject,
                                                showlegend=column == 1), row=1, col=column)
        figure.update_xaxes(type="log", title_text="K (classes)", row=1, col=column)
    return _score_panels_layout(figure, measure, title or f"alignment vs K per subject ({measure})", 420 * len(regions) + 260, 440)


def selection_figure(selection: pd.DataFrame, title: str = ""):
    """Layer-selection curves: mean selection score (over subjects and seeds) vs extraction point per network
    (colour: K on a log scale; dash: label source; reference black, untrained grey) in one panel per region, with a
    star on the point selected most often (summed over subjects and seeds); ``selection`` is compare's table."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if selection.empty:
        raise ValueError("the selection table is empty")
    regions = list(dict.fromkeys(selection.region))
    ks = sorted(selection[selection.role == "condition"].K.dropna().astype(float).unique())
    sources = sorted(selection[selection.role == "condition"].label_source.dropna().unique())
    points = selection.drop_duplicates("point_index").sort_values("point_index")
    figure = make_subplots(rows=1, cols=len(regions), subplot_titles=regions, shared_yaxes=True)
    for column, region in enumerate(regions, start=1):
        here = selection[selection.region == region]
        for condition, group in here.groupby("condition", sort=True):
            first = group.iloc[0]
            curve = group.groupby("point_index").agg(score=("selection_score", "mean"), chosen=("n_selected", "sum"),
                                                     of=("n_subjects", "sum")).reset_index()
            colour = {"reference": "black", "untrained": "grey"}.get(first.role) or _k_colour(first.K, ks)
            dash = DASHES[sources.index(first.label_source) % len(DASHES)] if first.label_source in sources else "dash"
            figure.add_trace(go.Scatter(x=curve.point_index, y=curve.score, mode="lines", name=str(condition),
                                        legendgroup=str(condition), showlegend=column == 1,
                                        line={"color": colour, "dash": dash},
                                        customdata=np.stack([curve.chosen, curve.of], axis=1),
                                        hovertemplate="point %{x}: %{y:.3f}<br>selected by %{customdata[0]} of "
                                                      "%{customdata[1]}<extra>" + str(condition) + "</extra>"),
                             row=1, col=column)
            best = curve.loc[curve.chosen.idxmax()]
            figure.add_trace(go.Scatter(x=[best.point_index], y=[best.score], mode="markers", marker_symbol="star",
                                        marker={"color": colour, "size": 12}, legendgroup=str(condition),
                                        showlegend=False, hoverinfo="skip"), row=1, col=column)
        figure.update_xaxes(tickmode="array", tickvals=points.point_index, ticktext=points.point, tickangle=-60,
                            title_text="extraction point", row=1, col=column)
    figure.update_yaxes(title_text="selection score (training stimuli)", row=1, col=1)
    figure.update_layout(title=title or "layer selection: score per point (★ selected most often)",
                         template="plotly_white", width=460 * len(regions) + 300, height=480)
    return figure


def training_figure(training: pd.DataFrame, title: str = ""):
    """Training curves vs epoch for every network (colour: K on a log scale; dash: label source; reference
    black): one panel per logged loss/accuracy column (train_loss, heldout_loss, train_accuracy, heldout_accuracy);
    ``training`` is compare's ``training`` table."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    wanted = [c for c in ("train_loss", "heldout_loss", "train_accuracy", "heldout_accuracy") if c in training]
    if training.empty or not wanted:
        raise ValueError("the training table has no loss or accuracy columns")
    ks = sorted(training[training.role == "condition"].K.dropna().astype(float).unique())
    sources = sorted(training.label_source.dropna().unique())
    figure = make_subplots(rows=1, cols=len(wanted), subplot_titles=[c.replace("_", " ") for c in wanted])
    legend: set[str] = set()
    for (_, condition), group in training.groupby(["model_run_id", "condition"], sort=True):
        first, group = group.iloc[0], group.sort_values("epoch")
        colour = "black" if first.role == "reference" else _k_colour(first.K, ks)
        for column, metric in enumerate(wanted, start=1):
            shown = group[group[metric].notna()]
            figure.add_trace(go.Scatter(x=shown.epoch, y=shown[metric], mode="lines+markers", name=str(condition),
                                        legendgroup=str(condition), showlegend=column == 1 and condition not in legend,
                                        line={"color": colour, "dash": DASHES[sources.index(first.label_source) % len(DASHES)]},
                                        hovertemplate=f"seed {first.seed}, epoch %{{x}}: %{{y:.4g}}<extra>{condition}</extra>"),
                             row=1, col=column)
            figure.update_xaxes(title_text="epoch", row=1, col=column)
        legend.add(condition)
    figure.update_layout(title=title or "training curves", template="plotly_white", width=330 * len(wanted) + 300,
                         height=420)
    return figure


def sweep_history_figure(trials: pd.DataFrame, objective: str, direction: str, title: str = ""):
    """A sweep's optimisation history: each complete trial's ``objective`` vs trial number and the best so far
    (``direction`` "maximize" or "minimize"); pruned and failed trials are counted in the title. ``trials`` is the
    sweep run's ``trials.csv``."""
    import plotly.graph_objects as go

    complete = trials[(trials.state == "COMPLETE") & trials[objective].notna()].sort_values("number")
    if complete.empty:
        raise ValueError(f"no complete trial has a value of {objective!r}")
    best = complete[objective].cummax() if direction == "maximize" else complete[objective].cummin()
    others = trials.state.value_counts().drop("COMPLETE", errors="ignore")
    counted = ", ".join(f"{n} {state.lower()}" for state, n in others.items())
    figure = go.Figure([go.Scatter(x=complete.number, y=complete[objective], mode="markers", name="trial"),
                        go.Scatter(x=complete.number, y=best, mode="lines", line={"shape": "hv"}, name="best so far")])
    figure.update_xaxes(title_text="trial")
    figure.update_yaxes(title_text=objective)
    figure.update_layout(title=title or f"{objective} ({direction}) per trial" + (f"; also {counted}" if counted else ""),
                         template="plotly_white", width=720, height=400)
    return figure


def importance_figure(importances: pd.DataFrame, title: str = ""):
    """Parameter importances (fANOVA share of the objective's variance) as horizontal bars, one colour per
    objective; ``importances`` has columns objective, parameter, importance."""
    import plotly.graph_objects as go

    if importances.empty:
        raise ValueError("the importances table is empty")
    figure = go.Figure()
    for index, (objective, group) in enumerate(importances.groupby("objective", sort=True)):
        group = group.sort_values("importance")
        figure.add_trace(go.Bar(x=group.importance, y=group.parameter, orientation="h", name=str(objective),
                                marker={"color": COLOURS[index % len(COLOURS)]}))
    figure.update_xaxes(title_text="importance (share of variance, fANOVA)")
    figure.update_layout(title=title or "parameter importances", template="plotly_white", barmode="group",
                         width=720, height=120 + 40 * importances.parameter.nunique() * max(1, importances.objective.nunique()))
    return figure
