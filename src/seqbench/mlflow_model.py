"""The loader path every logged seqbench model names: keep it importable.

Each logged model carries a copy of ``serving/pyfunc_entry.py``, which imports
``seqbench.mlflow_model.SeqbenchTextClassifier`` when the model is loaded. Models logged before
the code moved into ``seqbench.serving`` name this path too, so it stays as a stable alias.
"""

from seqbench.serving.mlflow_model import SeqbenchTextClassifier

__all__ = ["SeqbenchTextClassifier"]
