"""What trains a model, knowing nothing of MLflow: the LightningModule and ``build_task``
(``task``: loss, metrics, optimiser), fit, test and the run's metrics (``fit``), CPU data
parallelism in batch slices (``parallel``), the CPU plan (``cpu``: threads, slices, denormals),
hardware defaults (``hardware``), tracking-free Lightning callbacks (``callbacks``), and
Optuna pruning per validation epoch (``pruning``)."""
