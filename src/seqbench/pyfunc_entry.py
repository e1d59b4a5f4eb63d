"""MLflow "models from code" entry point of seqbench's pyfunc model (``seqbench.mlflow_model``).

MLflow copies this file into every logged model and runs it when the model is loaded, so the
model holds no pickled Python object, only a reference to the installed seqbench package.
"""

from mlflow.models import set_model

from seqbench.mlflow_model import SeqbenchTextClassifier

set_model(SeqbenchTextClassifier())
