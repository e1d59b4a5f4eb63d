"""Using a trained model: raw text to scores (``inference``), the MLflow pyfunc model every run
logs (``mlflow_model``, loaded through ``pyfunc_entry``), and ``seqbench-predict`` (``predict``);
numeric series through ``numeric``; ``schema`` holds the output columns and input checks that
``seqbench-predict`` needs before it imports torch."""
