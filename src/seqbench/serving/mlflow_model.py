"""The MLflow model every finished run logs: a pyfunc that scores raw text.

The model folder holds ``artifacts/seqbench/`` (``seqbench.serving.inference`` bundle: weights as a plain
``state_dict``, the ``model.net`` config, vocabulary and preprocessing), a signature (a string
column ``text`` in; ``label``, one ``prob_<label>`` column per class, ``tokens`` and
``truncated`` out) and an input example. Loading needs only seqbench installed: no dataset, no
Hydra composition, no training code path. The python model is logged "from code"
(``seqbench/serving/pyfunc_entry.py``, copied into the model): nothing is pickled, but it imports
``seqbench.serving.mlflow_model.SeqbenchTextClassifier``, so keep that class importable under this name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema
from omegaconf import DictConfig, OmegaConf

from seqbench.serving.inference import Predictor, Preprocessing, save_bundle
from seqbench.serving.numeric import NumericPredictor, NumericPreprocessing, series_from_input
from seqbench.serving.schema import (
    LABEL_COLUMN,
    TOKENS_COLUMN,
    TRUNCATED_COLUMN,
    InputError,
    check_texts,
)

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name: runs:/<run id>/model
BUNDLE_ARTIFACT = "seqbench"
TEXT_COLUMN = "text"
INPUT_EXAMPLE = ["A wonderful film: moving, funny and superbly acted.", "Dull, far too long."]


def texts_from_input(model_input: Any) -> list[str]:
    """The strings in whatever MLflow hands ``predict``: a DataFrame (its ``text`` column, or
    its only column), a Series, a list or array of strings, or a dict ``{"text": [...]}``."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            values = model_input[TEXT_COLUMN]
        elif model_input.shape[1] == 1:
            values = model_input.iloc[:, 0]
        else:
            raise InputError(
                f"expected a column {TEXT_COLUMN!r} (or a single column), got columns "
                f"{list(model_input.columns)}"
            )
        return check_texts(values.tolist(), lambda i: f"row {i}")
    if isinstance(model_input, dict):
        if set(model_input) != {TEXT_COLUMN}:
            raise InputError(f"expected {{{TEXT_COLUMN!r}: [...]}}, got keys {list(model_input)}")
        return texts_from_input(model_input[TEXT_COLUMN])
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, (pd.Series, np.ndarray)):
        model_input = (
            model_input.ravel().tolist()
            if isinstance(model_input, np.ndarray)
            else (model_input.tolist())
        )
    if isinstance(model_input, (list, tuple)):
        return check_texts(model_input, lambda i: f"row {i}")
    raise InputError(f"expected strings, got {type(model_input).__name__}")


class _BundleClassifier(mlflow.pyfunc.PythonModel):
    """What the text and numeric pyfunc wrappers share: load a predictor from the model's
    ``seqbench`` bundle artifact, parse the input, and report bad input as MLflow's
    ``INVALID_PARAMETER_VALUE`` (HTTP 400 when served). Subclasses name the predictor class and
    the input parser; they hold no state until loaded."""

    predictor_class: ClassVar[type[Predictor] | type[NumericPredictor]]
    predictor: Any

    @staticmethod
    def parse_input(model_input: Any) -> Any:
        raise NotImplementedError

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.predictor = self.predictor_class.load(
            context.artifacts[BUNDLE_ARTIFACT], device=device
        )

    # Annotated pd.DataFrame on purpose: MLflow 3 derives a schema and input conversion from
    # other hints (list[str], ...) and warns when there is none; with this one the explicit
    # signature governs, and parse_input still accepts lists, arrays and dicts.
    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Label and class probabilities per input (see the subclass's ``parse_input``)."""
        try:
            return self.predictor.predict(self.parse_input(model_input))
        except InputError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None


class SeqbenchTextClassifier(_BundleClassifier):
    """pyfunc wrapper around ``seqbench.serving.inference.Predictor``; accepts strings
    (``texts_from_input``)."""

    predictor_class = Predictor
    predictor: Predictor
    parse_input = staticmethod(texts_from_input)


class SeqbenchSeriesClassifier(_BundleClassifier):
    """pyfunc wrapper around ``NumericPredictor``; accepts JSON arrays (``series_from_input``)."""

    predictor_class = NumericPredictor
    predictor: NumericPredictor
    parse_input = staticmethod(series_from_input)


@contextlib.contextmanager
def use_store(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking and registry URIs at ``uri`` for the block (what
    ``Model.log`` and ``runs:/``/``models:/`` resolution read), then restore them exactly.

    MLflow 3.17's setters also export ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` to the
    environment, and resetting the tracking URI to "unset" deletes ``MLFLOW_TRACKING_URI`` even
    when the user had set it: both variables are saved and put back as they were."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {name: os.environ.get(name) for name in names}
    saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def signature(labels: list[str]) -> ModelSignature:
    outputs = [ColSpec("string", LABEL_COLUMN)]
    outputs += [ColSpec("double", f"prob_{label}") for label in labels]
    outputs += [ColSpec("long", TOKENS_COLUMN), ColSpec("boolean", TRUNCATED_COLUMN)]
    return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema(outputs))


def requirements() -> list[str]:
    """What the model needs, pinned to this environment (MLflow would otherwise infer them by
    loading the model in a subprocess, which costs seconds per run). seqbench itself is a
    requirement: ``mlflow models serve --env-manager local`` uses the current environment."""
    import hydra
    import omegaconf

    from seqbench.version import __version__

    return [
        f"seqbench=={__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        f"hydra-core=={hydra.__version__}",
        f"omegaconf=={omegaconf.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
    ]


def best_weights(best_path: str) -> dict[str, torch.Tensor] | None:
    """The network's weights from the best-validation checkpoint (what the test metrics
    describe), read with ``weights_only``; None when there is no checkpoint, or when it holds
    objects ``weights_only`` refuses (the caller then keeps the in-memory weights, which
    ``trainer.test(ckpt_path=best)`` has just loaded from that same checkpoint)."""
    if not best_path or not Path(best_path).is_file():
        return None
    try:
        checkpoint = torch.load(best_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        log.warning(
            "best checkpoint not loadable with weights_only (%s); using the in-memory net", exc
        )
        return None
    return {
        k.removeprefix("net."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("net.")
    }


def _log_bundle_model(
    tracking_uri: str,
    run_id: str,
    net: torch.nn.Module,
    net_config: dict,
    prep: Preprocessing | NumericPreprocessing,
) -> ModelInfo:
    """Log the pyfunc model named ``model`` to ``run_id`` (MLflow 3 logged model, linked to the
    run, so it shows in the runs table's Model column and resolves as ``runs:/<id>/model``).
    The code is logged "from code" (``pyfunc_entry.py``, or ``pyfunc_series_entry.py`` for a
    numeric model, tagged ``seqbench.input_kind=numeric``): nothing is pickled. Only the text
    model has a signature and an input example."""
    numeric = isinstance(prep, NumericPreprocessing)
    tags = {"seqbench.labels": ",".join(prep.labels)}
    extra: dict[str, Any] = {}
    if numeric:
        tags["seqbench.input_kind"] = "numeric"
    else:
        extra["signature"] = signature(prep.labels)
        extra["input_example"] = pd.DataFrame({TEXT_COLUMN: INPUT_EXAMPLE})
    entry = "pyfunc_series_entry.py" if numeric else "pyfunc_entry.py"
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    # Created here, not by Model.log: given a run id but no active run, MLflow 3.17's Model.log
    # files the logged model under the *default* experiment (0) instead of the run's.
    logged = client.create_logged_model(
        run.info.experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        params=dict(run.data.params),
        tags=tags,
    )
    # Model.log uploads through the *global* tracking URI: point it at the run's store.
    with use_store(tracking_uri), tempfile.TemporaryDirectory(prefix="seqbench-model-") as tmp:
        bundle = save_bundle(Path(tmp) / BUNDLE_ARTIFACT, net, net_config, prep)  # type: ignore[arg-type]
        return Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(Path(__file__).with_name(entry)),
            artifacts={BUNDLE_ARTIFACT: str(bundle)},
            pip_requirements=requirements(),
            **extra,
        )


def log_model(
    tracking_uri: str, run_id: str, net: torch.nn.Module, net_config: dict, prep: Preprocessing
) -> ModelInfo:
    """Log the text pyfunc model (see ``_log_bundle_model``)."""
    return _log_bundle_model(tracking_uri, run_id, net, net_config, prep)


def log_series_model(
    tracking_uri: str,
    run_id: str,
    net: torch.nn.Module,
    net_config: dict,
    prep: NumericPreprocessing,
) -> Any:
    """Log the numeric pyfunc model (see ``_log_bundle_model``)."""
    return _log_bundle_model(tracking_uri, run_id, net, net_config, prep)


def log_run_model(
    client: MlflowClient,
    run_id: str,
    cfg: DictConfig,
    task: Any,
    datamodule: Any,
    best_path: str,
) -> ModelInfo | None:
    """Called by ``seqbench-train`` once the test metrics are logged: log the best checkpoint's
    network as the run's MLflow model. ``+logger.log_model=false`` skips it."""
    if not cfg.logger.get("log_model", True):
        return None
    net = task.net
    weights = best_weights(best_path)
    if weights is not None:
        net.load_state_dict(weights)
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    if getattr(datamodule, "input_kind", "tokens") == "numeric":
        prep = NumericPreprocessing.from_datamodule(datamodule)
        info = log_series_model(str(client.tracking_uri), run_id, net, net_config, prep)
    else:
        prep = Preprocessing.from_datamodule(datamodule)
        info = log_model(str(client.tracking_uri), run_id, net, net_config, prep)
    log.info("logged MLflow model %s (runs:/%s/%s)", info.model_id, run_id, MODEL_NAME)
    return info
