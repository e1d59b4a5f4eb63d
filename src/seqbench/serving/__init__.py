"""Using a trained model: raw text to scores (``inference``), the MLflow pyfunc model every run
logs (``mlflow_model``, loaded through ``pyfunc_entry``), and ``seqbench-predict`` (``predict``)."""
