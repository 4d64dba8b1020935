"""Figures of a study as pure functions: a tidy DataFrame in, a Plotly figure out (re-used by the dashboard).

``coarseness_figure`` takes the comparison table of ``visreps compare`` (docs/evaluation.md, "Comparisons").
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for column, region in enumerate(regions, start=1):
        here = rows[rows.region == region]
        coarse = here[here.role == "condition"]
        ks = np.sort(coarse.K.dropna().unique().astype(float))
        span = [ks.min() / 1.3, ks.max() * 1.3] if ks.size else [1, 2]
        for index, (source, group) in enumerate(coarse.groupby("label_source", sort=True)):
            group = group.sort_values("K")
            colour = colours[index % len(colours)]
            figure.add_trace(go.Scatter(
                x=group.K, y=group["mean"], mode="lines+markers", name=str(source), legendgroup=str(source),
                showlegend=column == 1, line={"color": colour},
                error_y={"type": "data", "symmetric": False, "array": group.ci_high - group["mean"],
                         "arrayminus": group["mean"] - group.ci_low}), row=1, col=column)
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
            figure.add_trace(go.Scatter(x=span + span[::-1], y=[level.ci_high] * 2 + [level.ci_low] * 2, fill="toself",
                                        line={"width": 0}, fillcolor="rgba(128,128,128,0.15)", hoverinfo="skip",
                                        showlegend=False), row=1, col=column)
            figure.add_trace(go.Scatter(x=span, y=[level["mean"]] * 2, mode="lines", line={"color": "grey", "dash": dash},
                                        name=f"{role}: {level.condition}", legendgroup=role, showlegend=column == 1),
                             row=1, col=column)
        if measure == "raw" and "ceiling_low" in here and here.ceiling_low.notna().any():
            low, high = float(here.ceiling_low.min()), float(here.ceiling_high.max())
            figure.add_trace(go.Scatter(x=span + span[::-1], y=[high, high, low, low], fill="toself", line={"width": 0},
                                        fillcolor="rgba(44,160,44,0.12)", name="noise ceiling (subjects' range)",
                                        legendgroup="ceiling", showlegend=column == 1), row=1, col=column)
        figure.update_xaxes(type="log", title_text="K (classes)", row=1, col=column)
    figure.update_yaxes(title_text="score / noise ceiling" if measure == "normalised" else "score", row=1, col=1)
    figure.update_layout(title=title or f"alignment vs K ({measure})", template="plotly_white",
                         width=420 * len(regions) + 200, height=420)
    return figure
