"""MLflow "models from code" entry point of seqbench's pyfunc model (``seqbench.serving.mlflow_model``).

MLflow copies this file into every logged model and runs it when the model is loaded, so the
model holds no pickled Python object, only a reference to the installed seqbench package.
"""

from mlflow.models import set_model

from seqbench.mlflow_model import SeqbenchTextClassifier  # the stable loader path

set_model(SeqbenchTextClassifier())
