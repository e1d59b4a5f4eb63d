"""Model Registry and MLflow UI links for a comparison table (``seqbench-report --register``).

The champion of a table is its best run *by validation accuracy* (``val/acc_best``); test
accuracy never chooses (that would tune on the test set). Its logged model becomes a new
version of the registered model, with the alias ``champion`` and a description naming the
sweep and the table, so ``models:/<name>@champion`` always points at the latest choice.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from seqbench.config.store import redact_uri, sqlite_path
from seqbench.report.core import ReportError

CHAMPION = "champion"
SELECT_BY = "val/acc_best"
DEFAULT_UI = "http://127.0.0.1:5000"
# MLflow 3.17's UI opens in "GenAI" mode for a browser that never chose (a localStorage
# default); the experiment tag mlflow.experimentKind is ignored by its new sidebar. This URL
# parameter selects the "Model training" view for the page, and the sidebar keeps it.
TRAINING_VIEW = "workflowType=machine_learning"


class RegistryError(Exception):
    """A problem the user can fix (no logged model, no validation metric)."""


def ui_base(tracking_uri: str, port: int = 5000) -> str:
    """Where a browser finds the UI: the tracking server itself, else ``make ui``'s address."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return redact_uri(tracking_uri).rstrip("/")  # a link to print: no credentials
    return f"http://127.0.0.1:{port}"


def runs_view_url(tracking_uri: str, experiment_id: str, port: int = 5000) -> str:
    """Direct link to an experiment's training-runs table (the "Model training" view)."""
    return f"{ui_base(tracking_uri, port)}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def model_version_url(tracking_uri: str, name: str, version: str, port: int = 5000) -> str:
    return f"{ui_base(tracking_uri, port)}/#/models/{name}/versions/{version}?{TRAINING_VIEW}"


def champion_run(runs: Any) -> dict:
    """The row of ``runs`` (a report's per-run DataFrame) with the highest ``val_acc_best``;
    ties go to the earliest run. Test accuracy is not looked at."""
    best = None
    for row in runs.to_dict("records"):
        value = row.get("val_acc_best")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if best is None or value > best["val_acc_best"]:
            best = row
    if best is None:
        raise RegistryError(f"no selected run has {SELECT_BY}; cannot choose a champion")
    return best


def logged_model_id(client: MlflowClient, run_id: str) -> str:
    """The id of the run's logged model named ``model`` (the last one, if logged twice)."""
    from seqbench.serving.mlflow_model import MODEL_NAME  # lazily: it imports torch

    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    for output in sorted(outputs, key=lambda o: o.step, reverse=True):
        if client.get_logged_model(output.model_id).name == MODEL_NAME:
            return output.model_id
    raise RegistryError(
        f"run {run.info.run_name} ({run_id}) has no logged model {MODEL_NAME!r}; it was trained "
        "before seqbench logged models: re-train it, or register another selection"
    )


def register_champion(
    client: MlflowClient, report: Any, name: str, table: str | Path | None = None
) -> ModelVersion:
    """Register the report's best run by validation accuracy as a new version of ``name``,
    move the alias ``champion`` to it, and describe where it came from."""
    best = champion_run(report.runs)
    model_id = logged_model_id(client, best["run_id"])
    try:
        client.create_registered_model(
            name, description="seqbench models; the alias champion marks the current choice"
        )
    except MlflowException as exc:
        if "ALREADY_EXISTS" not in str(exc.error_code):
            raise
    sweep = f"sweep `{report.sweep_id}`" if report.sweep_id else "all runs (no sweep selected)"
    test = best.get("test_acc")
    description = (
        f"Champion of {sweep} in experiment `{report.experiment}` "
        f"({len(report.runs)} runs of {report.selection}): run `{best['run_name']}` "
        f"({best['run_id']}), chosen by validation accuracy ({SELECT_BY} = "
        f"{best['val_acc_best']:.4f}); its test accuracy ({test:.4f}) played no part in the "
        f"choice. Comparison table: {table or 'not written'}."
    )
    version = client.create_model_version(
        name,
        source=f"models:/{model_id}",
        run_id=best["run_id"],
        model_id=model_id,
        description=description,
        tags={"seqbench.sweep_id": report.sweep_id or "", "seqbench.selected_by": SELECT_BY},
    )
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return version


def after_report(
    client: MlflowClient, report: Any, register: str | None, table: str | Path | None
) -> ModelVersion | None:
    """What ``seqbench-report`` does once the table is written: print the link to the runs
    view, and with ``--register NAME`` register the champion. Messages go to stderr."""
    uri = str(client.tracking_uri)
    # The registry of seqbench's store is the store itself, unless the user points
    # MLFLOW_REGISTRY_URI elsewhere on purpose.
    client = MlflowClient(uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    print(
        f"seqbench-report: runs in the MLflow UI: {runs_view_url(uri, report.experiment_id)}"
        + ("" if ui_base(uri) != DEFAULT_UI else " (start it with `make ui`)"),
        file=sys.stderr,
    )
    if not register:
        return None
    try:
        version = register_champion(client, report, register, table)
    except RegistryError as exc:
        raise ReportError(str(exc)) from None
    print(
        f"seqbench-report: registered {register} version {version.version} "
        f"(alias {CHAMPION}: models:/{register}@{CHAMPION}) from run {version.run_id}; "
        f"{model_version_url(uri, register, version.version)}",
        file=sys.stderr,
    )
    return version


def print_links(argv: Sequence[str] | None = None) -> int:
    """``python -m seqbench.report.registry``: the runs-view link of every experiment in a store
    (``make ui`` prints them before starting the server)."""
    parser = argparse.ArgumentParser(prog="python -m seqbench.report.registry")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    path = sqlite_path(args.tracking_uri)
    if path is not None and not path.is_file():
        print("no runs yet: train something first (make demo)")
        return 0
    client = MlflowClient(args.tracking_uri)
    for exp in client.search_experiments():
        if exp.name == "Default" and not client.search_runs([exp.experiment_id], max_results=1):
            continue
        url = runs_view_url(args.tracking_uri, exp.experiment_id, args.port)
        print(f"experiment {exp.name}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(print_links())
