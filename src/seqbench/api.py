"""The Python API, for notebooks and scripts: the faces of the packages in four functions.

    import seqbench

    ROOT = "/tmp/seqbench-demo"
    result = seqbench.fit(["data=synthetic", "trainer.max_epochs=1"], root=ROOT)
    table = seqbench.compare("synthetic", root=ROOT)  # a pandas DataFrame
    model = seqbench.load_model(result.run_id, root=ROOT)
    model.score(["A wonderful film.", "Dull and far too long."])

``compose`` builds the ``train`` config exactly as ``seqbench-train`` does (``seqbench.config``),
``fit`` trains and tracks one run (``seqbench.job``), ``compare`` builds the report's table
(``seqbench.report``), ``load_model`` scores texts with a logged model (``seqbench.serving``).
They are exposed lazily as ``seqbench.<name>``: torch, Lightning, MLflow and Hydra are imported
when a function is first called, so ``import seqbench`` stays cheap. Errors a user can fix are
raised as the packages' own exceptions (``ConfigError``, ``ReportError``, ``PredictError``).

``root`` is the project folder every output lives under (``<root>/outputs``: runs, data cache,
the SQLite MLflow store), as ``$SEQBENCH_ROOT`` is for the commands; ``None`` means what the
commands use (``$SEQBENCH_ROOT``, else the source checkout, else the working directory).
``$MLFLOW_TRACKING_URI`` and ``$SEQBENCH_DATA_DIR`` are honoured as by the commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported for annotations only: the functions import them when called
    import pandas as pd
    from omegaconf import DictConfig

    from seqbench.job import TrainResult
    from seqbench.serving.inference import Predictor

__all__ = ["compose", "fit", "compare", "load_model", "LoadedModel"]

_HYDRA_RUNTIME_DIR = "${hydra:runtime.output_dir}"


def compose(overrides: Sequence[str] | None = None, root: str | Path | None = None) -> DictConfig:
    """The ``train`` config as ``seqbench-train OVERRIDES`` composes it, without a Hydra app.

    ``paths.output_dir`` (Hydra's run folder for a command) becomes a new
    ``<root>/outputs/runs/<time>_<uid>`` folder, from the same ``hydra.run.dir`` pattern, unless
    an override sets it. ``root`` replaces ``paths.root_dir`` after the overrides are applied.

    >>> cfg = seqbench.compose(["model=bilstm", "seed=2"], root="/tmp/seqbench-demo")
    >>> cfg.logger.tracking_uri
    'sqlite:////tmp/seqbench-demo/outputs/mlflow/mlflow.db'
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from seqbench.config.paths import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides or []), return_hydra_config=True)
    with open_dict(cfg):
        if root is not None:  # set on the node, so any character in the path is taken as is
            cfg.paths.root_dir = str(Path(root).expanduser().resolve())
        if OmegaConf.to_container(cfg.paths)["output_dir"] == _HYDRA_RUNTIME_DIR:
            cfg.paths.output_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))
        del cfg["hydra"]  # Hydra's own settings: only a Hydra app reads them
    return cfg


def fit(overrides: Sequence[str] | None = None, root: str | Path | None = None) -> TrainResult:
    """Train and test one model and track it in MLflow, as ``seqbench-train OVERRIDES`` does.

    Returns ``TrainResult(run_id, metrics, skipped)``: the MLflow run, its final metrics
    (``test/acc``, ``val/acc_best``, ...) and whether an identical finished run was reused
    instead (``resume=auto``; pass ``"resume=never"`` to train again). An interrupted call
    (Jupyter's interrupt button) marks the run KILLED; calling ``fit`` again continues it.

    >>> result = seqbench.fit(["data=synthetic", "trainer.max_epochs=1"], root="/tmp/seqbench-demo")
    >>> result.metrics["test/acc"]
    """
    from seqbench.job import train
    from seqbench.serving.mlflow_model import use_store

    cfg = compose(overrides, root)
    # Lightning's MLflow logger sets MLflow's global tracking URI, which MLflow exports as
    # $MLFLOW_TRACKING_URI: without the restore, every later call in this process (another
    # root's compose, fit or compare) would silently read and write this run's store.
    with use_store(str(cfg.logger.tracking_uri)):
        return train(cfg)


def compare(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    root: str | Path | None = None,
    sweep_id: str | None = None,
    latest_sweep: bool = False,
    filter_string: str | None = None,
    group_by: str | Sequence[str] | None = None,
    metric: str = "test/acc",
    baseline: str | None = None,
    per_run: bool = False,
) -> pd.DataFrame:
    """The comparison table of ``seqbench-report --experiment EXPERIMENT`` as a DataFrame.

    One row per group (the ``model`` tag by default) with the report's columns: ``n``,
    ``test_acc_mean``, ``test_acc_std`` (over seeds, ddof=1; NaN for one run),
    ``val_acc_best_mean``, ``val_loss_mean``, ``params``, ``epochs``, ``sec_per_epoch`` and the
    95% interval (``seqbench.report`` documents every column). Accuracies are fractions in [0, 1].
    ``per_run=True`` returns the rows behind the means instead, one per included run (with
    ``run_id``). Only FINISHED runs with ``test/acc`` count (never a run that Optuna's pruner
    stopped early: it has no test); nothing is written.

    The store is ``tracking_uri``, else the one ``fit`` writes to under ``root``. The other
    options are the report's (``--sweep-id``, ``--latest-sweep``, ``--filter``, ``--group-by``,
    ``--metric``, ``--baseline``).

    >>> seqbench.compare("synthetic", root="/tmp/seqbench-demo", group_by="model,seed")
    """
    from seqbench.report import build_table
    from seqbench.report.selection import Selection

    selection = Selection(sweep_id, filter_string, group_by, latest_sweep, metric=metric)
    uri = tracking_uri or _tracking_uri(root)
    report = build_table(uri, experiment, baseline=baseline, **selection.as_kwargs())
    return report.runs if per_run else report.table


class LoadedModel:
    """A logged seqbench model, ready to score raw texts in this process."""

    def __init__(self, predictor: Predictor, uri: str, batch_size: int = 256) -> None:
        self.predictor = predictor  # seqbench.serving.inference.Predictor: net + preprocessing
        self.uri = uri
        self.batch_size = batch_size

    @property
    def labels(self) -> list[str]:
        """Class names, in the order of the ``prob_<label>`` columns."""
        return self.predictor.labels

    def score(self, texts: str | Sequence[str]) -> pd.DataFrame:
        """One row per text, in order: ``label`` (the most probable class), ``prob_<label>`` for
        each class (they sum to 1), ``tokens`` and ``truncated`` (cut to ``max_len``), as
        ``seqbench-predict --format csv`` writes them. A single string is one text."""
        batch = [texts] if isinstance(texts, str) else texts
        return self.predictor.predict(batch, batch_size=self.batch_size)

    def __repr__(self) -> str:
        return f"LoadedModel({self.uri!r}, labels={self.labels})"


def load_model(
    model: str,
    tracking_uri: str | None = None,
    *,
    root: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 256,
) -> LoadedModel:
    """A run's logged model, to score texts with ``.score(texts)``.

    ``model`` is what ``seqbench-predict --model`` takes: a run id, ``runs:/<run id>/model``,
    ``models:/<name>@<alias>`` or a local MLflow model folder. Run ids and URIs are looked up in
    ``tracking_uri``, else the store ``fit`` writes to under ``root``. On a CPU with several
    cores each batch is scored as parallel slices, which sets torch's thread count for the
    process (as ``seqbench-predict`` does).

    >>> model = seqbench.load_model(result.run_id, root="/tmp/seqbench-demo")
    >>> model.score(["A wonderful film.", "Dull and far too long."])
    """
    from seqbench.serving.predict import load_predictor, model_uri

    uri = tracking_uri or _tracking_uri(root)
    predictor = load_predictor(model, uri, device, batch_size)
    return LoadedModel(predictor, model_uri(model), batch_size)


def _tracking_uri(root: str | Path | None) -> str:
    """The store ``fit`` writes to under ``root``: read from the composed config, so it is the
    same definition ``seqbench-train`` uses (``$MLFLOW_TRACKING_URI`` included)."""
    return str(compose(root=root).logger.tracking_uri)
