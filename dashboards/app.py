"""The visreps dashboard: alignment vs K per dataset and region from the compare runs of a tracking store, with
CIs, the fine-label and untrained levels, the noise-ceiling band and significance marks; the PCA-reconstruction
control, effective dimensionality vs K, and the runs behind each condition with links into the MLflow UI.

  visreps dashboard --tracking-uri http://127.0.0.1:5000 --port 8050     (default: the embedded store)
  python dashboards/app.py --tracking-uri URI --port P

Reads the tracking store through ``visreps.tracking.results`` (compare runs found on the server side, each run's
tidy tables read once and cached until "Refresh"); draws with ``visreps.figures``, the same functions the compare
runs' own figures use.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import pandas as pd

EMPTY = ("No compare runs in this tracking store yet: run `visreps pipeline` (the demo) or `visreps evaluate` "
         "followed by `visreps compare`, then press Refresh.")


class Results:
    """The compare runs of the store and their tables, read once per run until ``refresh``."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, pd.DataFrame]] = {}
        self.runs = pd.DataFrame()

    def refresh(self) -> pd.DataFrame:
        from visreps.tracking.results import compare_runs

        self.tables.clear()
        self.runs = compare_runs()
        return self.runs

    def of(self, run_id: str) -> dict[str, pd.DataFrame]:
        from visreps.tracking.results import run_table

        if run_id not in self.tables:
            self.tables[run_id] = {"comparison": run_table(run_id, "comparison.parquet"),
                                   "reconstruction": run_table(run_id, "reconstruction.parquet"),
                                   "dimensionality": run_table(run_id, "dimensionality.csv")}
        return self.tables[run_id]


def _options(runs: pd.DataFrame) -> list[dict[str, str]]:
    return [{"label": f"{r.dataset} · {r.analysis} · {r.experiment} · {r.run_id[:8]}", "value": r.run_id}
            for r in runs.itertuples()]


def _runs_table(comparison: pd.DataFrame, experiment_id: str):
    """Conditions, their mean and CI, and the evaluation runs behind them (links into the MLflow UI)."""
    from dash import html

    from visreps.tracking.results import run_url

    rows = []
    for row in comparison[comparison.measure == "raw"].itertuples():
        links = []
        for run_id in str(row.runs).split(","):
            url = run_url(experiment_id, run_id)
            links += [html.A(run_id[:8], href=url, target="_blank") if url else html.Span(run_id[:8]), " "]
        rows.append(html.Tr([html.Td(row.region), html.Td(row.condition), html.Td(f"{row.mean:.3f}"),
                             html.Td(f"[{row.ci_low:.3f}, {row.ci_high:.3f}]"), html.Td(links)]))
    head = html.Tr([html.Th(name) for name in ("region", "condition", "mean", "CI", "evaluation runs")])
    return html.Table([html.Thead(head), html.Tbody(rows)], id="runs-table")


def create_app(results: Results | None = None):
    """The Dash app over ``results`` (a fresh ``Results`` by default)."""
    import dash
    from dash import Input, Output, State, dcc, html

    results = results or Results()
    app = dash.Dash(__name__, title="visreps")
    app.layout = html.Div([
        html.H2("visreps: alignment vs granularity"),
        html.Div([html.Button("Refresh", id="refresh"),
                  dcc.Dropdown(id="compare-run", placeholder="compare run", style={"width": "640px"}),
                  dcc.RadioItems(id="measure", options=[{"label": " raw", "value": "raw"},
                                                        {"label": " normalised by the noise ceiling",
                                                         "value": "normalised"}], value="raw", inline=True),
                  dcc.Checklist(id="sources", inline=True)],
                 style={"display": "flex", "gap": "16px", "alignItems": "center", "flexWrap": "wrap"}),
        html.Div(id="message", style={"margin": "12px 0", "color": "#a33"}),
        dcc.Graph(id="coarseness"), dcc.Graph(id="reconstruction"), dcc.Graph(id="dimensionality"),
        html.H3("Runs"), html.Div(id="runs"),
    ], style={"fontFamily": "sans-serif", "margin": "16px"})

    @app.callback(Output("compare-run", "options"), Output("compare-run", "value"), Input("refresh", "n_clicks"),
                  State("compare-run", "value"))
    def _refresh(_clicks: int | None, current: str | None):
        runs = results.refresh()
        value = current if current in set(runs.run_id) else (runs.run_id.iloc[0] if len(runs) else None)
        return _options(runs), value

    @app.callback(Output("sources", "options"), Output("sources", "value"), Input("compare-run", "value"))
    def _sources(run_id: str | None):
        if not run_id:
            return [], []
        comparison = results.of(run_id)["comparison"]
        sources = sorted(comparison[comparison.role == "condition"].label_source.dropna().unique())
        return [{"label": f" {s}", "value": s} for s in sources], sources

    @app.callback(Output("coarseness", "figure"), Output("reconstruction", "figure"), Output("dimensionality", "figure"),
                  Output("runs", "children"), Output("message", "children"),
                  Input("compare-run", "value"), Input("measure", "value"), Input("sources", "value"))
    def _draw(run_id: str | None, measure: str, sources: list[str] | None):
        return draw(results, run_id, measure, sources)

    return app


def draw(results: Results, run_id: str | None, measure: str, sources: list[str] | None) -> tuple[Any, ...]:
    """(coarseness, reconstruction, dimensionality figures, runs table, message) of one compare run."""
    import plotly.graph_objects as go

    from visreps.figures import coarseness_figure, dimensionality_figure, reconstruction_figure

    blank = go.Figure(layout={"template": "plotly_white", "height": 120})
    if not run_id:
        return blank, blank, blank, None, EMPTY
    tables = results.of(run_id)
    comparison = tables["comparison"]
    if comparison.empty:
        return blank, blank, blank, None, f"compare run {run_id} has no comparison table; run `visreps compare` again"
    keep = comparison.role.isin(["reference", "untrained"]) | comparison.label_source.isin(sources or [])
    shown = comparison[keep]
    row = results.runs[results.runs.run_id == run_id].iloc[0]
    title = f"{row.dataset} {row.analysis}"
    notes = []
    if (shown.measure == measure).any():
        coarseness = coarseness_figure(shown, measure, f"{title}: alignment vs K ({measure})")
    else:
        coarseness, notes = blank, [f"no {measure} scores (a subject without a noise ceiling)"]
    rebuilt = tables["reconstruction"]
    reconstruction = (reconstruction_figure(rebuilt, shown, measure, f"{title}: PCA-reconstruction control ({measure})")
                      if len(rebuilt) and (rebuilt.measure == measure).any() else blank)
    if reconstruction is blank:
        notes.append("no reconstruction control in this run (RSA compare runs have one; `controls.reconstruction_components`)")
    dims = tables["dimensionality"]
    dims = dims[dims.role.isin(["reference", "untrained"]) | dims.label_source.isin(sources or [])] if len(dims) else dims
    dimensionality = dimensionality_figure(dims, f"{title}: effective dimensionality vs K") if len(dims) else blank
    return coarseness, reconstruction, dimensionality, _runs_table(comparison, row.experiment_id), "; ".join(notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking server (default: the embedded store)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args(argv)
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    from visreps.errors import VisrepsError
    from visreps.tracking import ensure_tracking_available

    try:
        ensure_tracking_available()
    except VisrepsError as error:
        print(f"visreps dashboard: error: {error}", file=sys.stderr)
        return 2
    print(f"visreps dashboard: http://{args.host}:{args.port}/ (tracking {os.environ.get('MLFLOW_TRACKING_URI') or 'embedded store'})",
          flush=True)
    create_app().run(host=args.host, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
