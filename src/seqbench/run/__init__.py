"""A training run's life in MLflow, from the decision to its final status.

``lifecycle`` owns it: connect to the store, plan (skip, new or resume: ``resume`` decides on
``jobs``' identity and ``heartbeat``'s liveness), start the run (tags, params, heartbeat), the
callbacks it lends the trainer (checkpoints copied to MLflow: ``checkpoints``; heartbeat each
epoch), and the exit (FINISHED, FAILED with the reason, KILLED on a signal: ``interrupt``).
``tracking`` is the MLflow bookkeeping underneath; ``lineage`` and ``plots`` record a run's
data inputs and confusion matrix; ``optuna_trial`` links a search's job to its Optuna trial.
"""
