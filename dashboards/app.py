"""The visreps dashboard: the study's results from a tracking store, drawn from the tidy tables of its compare and
sweep runs. Views: alignment vs K per dataset and region (CIs, the fine-label and untrained levels, the
noise-ceiling band, significance marks), per subject, layer selection (which point wins per K and region),
training curves, the PCA-reconstruction control, effective dimensionality vs K, sweeps (history, parameter
importances), and the runs behind each condition with links into the MLflow UI and the models' registry aliases.

  visreps dashboard --tracking-uri http://127.0.0.1:5000 --port 8050     (default: the embedded store)
  python dashboards/app.py --tracking-uri URI --port P
  http://127.0.0.1:8050/?run=<compare run id>                             (opens that compare run)

Reads the store through ``visreps.tracking.results`` (runs found with server-side filters, a page at a time; each
run's tables read once, when a view first needs them, and cached until "Refresh"); draws with ``visreps.figures``,
the same functions as the compare runs' own figures and `visreps figures`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import parse_qs

import pandas as pd

EMPTY = ("No compare runs in this tracking store yet: run `visreps pipeline` (the demo) or `visreps evaluate` "
         "followed by `visreps compare`, then press Refresh.")
NO_SWEEPS = "No sweep runs in this tracking store yet: run `visreps sweep` (e.g. --config configs/sweep/demo_grid.yaml)."
VIEWS = {"coarseness": "alignment vs K", "subjects": "per subject", "selection": "layer selection",
         "training": "training curves", "controls": "controls & dimensionality", "sweeps": "sweeps", "runs": "runs"}
#: tables filtered by the label-source and architecture checklists (reference and untrained rows always kept)
FILTERED = ("comparison", "reconstruction", "dimensionality", "subjects", "selection", "training", "evaluations")


class Results:
    """The compare and sweep runs of the store, their tables (read once each until ``refresh``) and the
    registry aliases of the evaluated models."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], pd.DataFrame] = {}
        self.aliases: dict[tuple[str, str], list[str]] = {}
        self.runs = pd.DataFrame()
        self.sweeps = pd.DataFrame()

    def refresh(self, clear: bool = True) -> pd.DataFrame:
        """List the runs again; ``clear``: also forget the tables and aliases read so far."""
        from visreps.tracking.results import compare_runs, sweep_runs

        if clear:
            self.tables.clear()
            self.aliases.clear()
        self.runs, self.sweeps = compare_runs(), sweep_runs()
        return self.runs

    def table(self, run_id: str, name: str) -> pd.DataFrame:
        """A compare run's table ``name`` (visreps.stages.compare_tables.LOGGED_TABLES), or a sweep run's
        ``trials``, ``objectives`` or ``importances``; empty when the run has none."""
        from visreps.stages.compare_tables import LOGGED_TABLES, compare_run_table
        from visreps.tracking.results import run_table

        if (run_id, name) not in self.tables:
            self.tables[run_id, name] = (compare_run_table(run_id, name) if name in LOGGED_TABLES
                                         else run_table(run_id, f"{name}.csv"))
        return self.tables[run_id, name]

    def alias_of(self, evaluations: pd.DataFrame) -> list[str]:
        """Per evaluation row its model's registry aliases now ("" for a model not in the registry)."""
        from visreps.tracking.results import model_aliases

        keys = [(_text(r.registered_model), _text(r.model_version)) for r in evaluations.itertuples()]
        missing = {name for name, _ in keys if name} - {name for name, _ in self.aliases}
        if missing:
            self.aliases.update(model_aliases(sorted(missing)))
        return [", ".join(f"@{a}" for a in self.aliases.get(key, [])) for key in keys]


def _text(value: object) -> str:
    """A tag value read back from a table as text: "" for a missing one, whole numbers without ".0"."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _options(runs: pd.DataFrame, *columns: str) -> list[dict[str, str]]:
    return [{"label": " · ".join([*(str(getattr(r, c)) for c in columns), r.experiment, r.run_id[:8]]), "value": r.run_id}
            for r in runs.itertuples()]


def _link(experiment_id: str | None, run_id: str):
    from dash import html

    from visreps.tracking.results import run_url

    if not run_id:
        return ""
    url = run_url(experiment_id, run_id)
    return html.A(run_id[:8], href=url, target="_blank") if url else html.Span(run_id[:8])


def runs_table(evaluations: pd.DataFrame, comparison: pd.DataFrame, aliases: list[str], experiment_id: str):
    """A row per evaluation: condition, seed, its mean test score per region, the evaluation and training runs
    (links into the MLflow UI), the registered model version and its aliases."""
    from dash import html

    raw = comparison[comparison.measure == "raw"]
    regions = list(dict.fromkeys(raw.region))
    means = {(row.condition, row.region): f"{row.mean:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]" for row in raw.itertuples()}
    rows = []
    for row, alias in zip(evaluations.itertuples(), aliases):
        version = f"{row.registered_model} v{_text(row.model_version)}" if _text(row.registered_model) else ""
        rows.append(html.Tr([html.Td(row.condition), html.Td(str(row.seed)),
                             *(html.Td(means.get((row.condition, region), "")) for region in regions),
                             html.Td(_link(experiment_id, row.run_id)), html.Td(_link(None, _text(row.model_run_id))),
                             html.Td(version), html.Td(alias)]))
    head = ["condition", "seed", *(f"{region} (condition mean, CI)" for region in regions), "evaluation run",
            "training run", "registered model", "aliases"]
    return html.Table([html.Thead(html.Tr([html.Th(name) for name in head])), html.Tbody(rows)], id="runs-table")


def _kept(table: pd.DataFrame, sources: list[str], architectures: list[str] | None) -> pd.DataFrame:
    if table.empty or "role" not in table:
        return table
    keep = table.role.isin(["reference", "untrained"]) | table.label_source.isin(sources)
    if architectures is not None and "architecture" in table:
        keep &= table.architecture.isin(architectures)
    return table[keep]


def draw_view(results: Results, view: str, run_id: str | None, measure: str, sources: list[str] | None,
              architectures: list[str] | None = None, sweep_id: str | None = None) -> tuple[list[Any], str]:
    """(components, message) of one view of a compare run (``sweeps``: of the sweep run ``sweep_id``), with the
    label sources and architectures chosen (None: every architecture)."""
    from dash import dcc

    if view == "sweeps":
        return _sweep_view(results, sweep_id)
    if not run_id:
        return [], EMPTY
    tables = {name: _kept(results.table(run_id, name), sources or [], architectures)
              for name in VIEW_TABLES.get(view, ())}
    if "comparison" in VIEW_TABLES.get(view, ()) and tables["comparison"].empty:
        return [], f"compare run {run_id} has no comparison rows for this selection; choose label sources, or run `visreps compare`"
    row = results.runs[results.runs.run_id == run_id].iloc[0]
    title = f"{row.dataset} {row.analysis}"
    if view == "runs":
        evaluations = tables["evaluations"]
        if evaluations.empty:
            return [], f"compare run {run_id} has no evaluations table (compare stage < 3): run `visreps compare ... force=true`"
        return [runs_table(evaluations, tables["comparison"], results.alias_of(evaluations), row.experiment_id)], ""
    figures, notes = VIEW_DRAWERS[view](tables, measure, title)
    return [dcc.Graph(id=name, figure=figure) for name, figure in figures.items()], "; ".join(notes)


def _coarseness(tables: dict[str, pd.DataFrame], measure: str, title: str):
    from visreps.figures import coarseness_figure

    if not (tables["comparison"].measure == measure).any():
        return {}, [f"no {measure} scores (a subject without a noise ceiling)"]
    return {"coarseness": coarseness_figure(tables["comparison"], measure, f"{title}: alignment vs K ({measure})")}, []


def _subjects(tables: dict[str, pd.DataFrame], measure: str, title: str):
    from visreps.figures import subject_figure

    subjects = tables["subjects"]
    if subjects.empty or not (subjects.measure == measure).any():
        return {}, [f"no per-subject {measure} scores in this compare run (compare stage ≥ 3 logs subjects.parquet)"]
    return {"subjects": subject_figure(subjects, measure, f"{title}: alignment vs K per subject ({measure})")}, []


def _selection(tables: dict[str, pd.DataFrame], measure: str, title: str):
    from visreps.figures import selection_figure

    if tables["selection"].empty:
        return {}, ["no selection curves: evaluations from evaluate stage ≥ 4 log selection.parquet; evaluate again"]
    return {"selection": selection_figure(tables["selection"], f"{title}: layer selection (★ selected most often)")}, []


def _training(tables: dict[str, pd.DataFrame], measure: str, title: str):
    from visreps.figures import training_figure

    if tables["training"].empty:
        return {}, ["no training curves: the evaluated networks have no visreps training run (or compare stage < 3)"]
    return {"training": training_figure(tables["training"], f"{title}: training curves")}, []


def _controls(tables: dict[str, pd.DataFrame], measure: str, title: str):
    from visreps.figures import dimensionality_figure, reconstruction_figure

    figures, notes, rebuilt = {}, [], tables["reconstruction"]
    if len(rebuilt) and (rebuilt.measure == measure).any():
        figures["reconstruction"] = reconstruction_figure(rebuilt, tables["comparison"], measure,
                                                          f"{title}: PCA-reconstruction control ({measure})")
    else:
        notes.append("no reconstruction control in this run (RSA compare runs have one; `controls.reconstruction_components`)")
    if len(tables["dimensionality"]):
        figures["dimensionality"] = dimensionality_figure(tables["dimensionality"], f"{title}: effective dimensionality vs K")
    return figures, notes


VIEW_TABLES = {"coarseness": ("comparison",), "subjects": ("comparison", "subjects"),
               "selection": ("comparison", "selection"), "training": ("comparison", "training"),
               "controls": ("comparison", "reconstruction", "dimensionality"), "runs": ("comparison", "evaluations")}
VIEW_DRAWERS = {"coarseness": _coarseness, "subjects": _subjects, "selection": _selection, "training": _training,
                "controls": _controls}


def _sweep_view(results: Results, sweep_id: str | None) -> tuple[list[Any], str]:
    from dash import dcc

    from visreps.figures import importance_figure, sweep_history_figure

    if not sweep_id:
        return [], NO_SWEEPS
    trials, objectives = results.table(sweep_id, "trials"), results.table(sweep_id, "objectives")
    if trials.empty or objectives.empty:
        return [], f"sweep run {sweep_id} has no trials.csv/objectives.csv (sweep stage < 2): run the sweep command again"
    graphs = [dcc.Graph(id=f"history-{index}", figure=sweep_history_figure(trials, o.objective, o.direction))
              for index, o in enumerate(objectives.itertuples())
              if ((trials.state == "COMPLETE") & trials[o.objective].notna()).any()]
    importances = results.table(sweep_id, "importances")
    if len(importances):
        graphs.append(dcc.Graph(id="importances", figure=importance_figure(importances)))
    note = "" if len(importances) else "no parameter importances yet (needs ≥ 2 complete trials with a varying parameter)"
    return graphs, note if graphs else "no complete trial yet"


def create_app(results: Results | None = None):
    """The Dash app over ``results`` (a fresh ``Results`` by default)."""
    import dash
    from dash import Input, Output, State, dcc, html

    results = results or Results()
    app = dash.Dash(__name__, title="visreps")
    row = {"display": "flex", "gap": "16px", "alignItems": "center", "flexWrap": "wrap", "margin": "6px 0"}
    app.layout = html.Div([
        dcc.Location(id="url", refresh=False),
        html.H2("visreps: alignment vs granularity"),
        html.Div([html.Button("Refresh", id="refresh"),
                  dcc.Dropdown(id="compare-run", placeholder="compare run", style={"width": "620px"}),
                  dcc.Dropdown(id="sweep-run", placeholder="sweep run", style={"width": "420px"})], style=row),
        html.Div([dcc.RadioItems(id="measure", options=[{"label": " raw", "value": "raw"},
                                                        {"label": " normalised by the noise ceiling", "value": "normalised"}],
                                 value="raw", inline=True),
                  html.Span("label sources:"), dcc.Checklist(id="sources", inline=True),
                  html.Span("architectures:"), dcc.Checklist(id="architectures", inline=True)], style=row),
        dcc.Tabs(id="view", value="coarseness", children=[dcc.Tab(label=label, value=value) for value, label in VIEWS.items()]),
        html.Div(id="message", style={"margin": "12px 0", "color": "#a33"}),
        html.Div(id="content"),
    ], style={"fontFamily": "sans-serif", "margin": "16px"})

    @app.callback(Output("compare-run", "options"), Output("compare-run", "value"), Output("sweep-run", "options"),
                  Output("sweep-run", "value"), Input("refresh", "n_clicks"), Input("url", "search"),
                  State("compare-run", "value"), State("sweep-run", "value"))
    def _refresh(_clicks: int | None, search: str | None, current: str | None, sweep: str | None):
        runs = results.refresh(clear=dash.ctx.triggered_id == "refresh")  # a page load keeps the tables read
        asked = parse_qs((search or "").lstrip("?")).get("run", [None])[0]  # ?run=<compare run id> opens that run
        current = asked if asked in set(runs.run_id) else current
        value = current if current in set(runs.run_id) else (runs.run_id.iloc[0] if len(runs) else None)
        sweeps = results.sweeps
        sweep = sweep if sweep in set(sweeps.run_id) else (sweeps.run_id.iloc[0] if len(sweeps) else None)
        return _options(runs, "dataset", "analysis"), value, _options(sweeps, "study"), sweep

    @app.callback(Output("sources", "options"), Output("sources", "value"), Output("architectures", "options"),
                  Output("architectures", "value"), Input("compare-run", "value"))
    def _filters(run_id: str | None):
        if not run_id:
            return [], [], [], []
        comparison = results.table(run_id, "comparison")
        conditions = comparison[comparison.role == "condition"]
        sources = sorted(conditions.label_source.dropna().unique())
        architectures = sorted(comparison.architecture.dropna().unique()) if "architecture" in comparison else []
        return ([{"label": f" {s}", "value": s} for s in sources], sources,
                [{"label": f" {a}", "value": a} for a in architectures], architectures or None)

    @app.callback(Output("content", "children"), Output("message", "children"), Input("view", "value"),
                  Input("compare-run", "value"), Input("measure", "value"), Input("sources", "value"),
                  Input("architectures", "value"), Input("sweep-run", "value"))
    def _draw(view: str, run_id: str | None, measure: str, sources: list[str] | None, architectures: list[str] | None,
              sweep_id: str | None):
        return draw_view(results, view, run_id, measure, sources, architectures, sweep_id)

    return app


def warm_up(results: Results) -> Results:
    """List the runs and read the newest compare run's comparison table and first figure once, before serving,
    so that the first page load finds the tracking client connected and the drawing code imported."""
    from visreps.figures import coarseness_figure

    results.refresh()
    if len(results.runs):
        comparison = results.table(results.runs.run_id.iloc[0], "comparison")
        if len(comparison) and "measure" in comparison:
            coarseness_figure(comparison, str(comparison.measure.iloc[0])).to_json()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking server (default: the embedded store)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args(argv)
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    from visreps.errors import VisrepsError
    from visreps.tracking import ensure_tracking_available, tracking_uri
    from visreps.tracking.store import redact

    try:
        ensure_tracking_available()
        results = warm_up(Results())
    except VisrepsError as error:
        print(f"visreps dashboard: error: {error}", file=sys.stderr)
        return 2
    print(f"visreps dashboard: http://{args.host}:{args.port}/ (tracking {redact(tracking_uri())}; "
          f"{len(results.runs)} compare runs, {len(results.sweeps)} sweep runs)", flush=True)
    create_app(results).run(host=args.host, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
