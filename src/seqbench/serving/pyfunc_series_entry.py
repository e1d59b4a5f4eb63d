"""MLflow "models from code" entry point of seqbench's numeric-series pyfunc model
(``seqbench.serving.numeric``); MLflow copies this file into every logged numeric model."""

from mlflow.models import set_model

from seqbench.serving.mlflow_model import SeqbenchSeriesClassifier  # the stable loader path

set_model(SeqbenchSeriesClassifier())
