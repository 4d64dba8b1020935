"""Figures of a study as pure functions: a tidy DataFrame in, a Plotly figure out (re-used by the dashboard).

``coarseness_figure`` takes the comparison table of ``visreps compare`` (docs/evaluation.md, "Comparisons"),
``reconstruction_figure`` its reconstruction table, ``dimensionality_figure`` its dimensionality table;
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
    figure.update_yaxes(title_text="score / noise ceiling" if measure == "normalised" else "score", row=1, col=1)
    figure.update_layout(title=title or f"alignment vs K ({measure})", template="plotly_white",
                         width=420 * len(regions) + 200, height=420)
    return figure


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
    figure.update_yaxes(title_text="score / noise ceiling" if measure == "normalised" else "score", row=1, col=1)
    figure.update_layout(title=title or f"PCA-reconstruction control ({measure})", template="plotly_white",
                         width=420 * len(regions) + 260, height=420)
    return figure


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
    except Exception as error:  # Kaleido missing, or no Chromium for it: the HTML stands
        for _, path in static:
            path.unlink(missing_ok=True)
        return f"static figures ({', '.join(sorted(set(formats) - {'html'}))}) not written: {type(error).__name__}: " \
               f"{str(error).splitlines()[0] if str(error) else ''} (needs kaleido and Chromium: apt-get install chromium)"
    return None
