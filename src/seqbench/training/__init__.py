"""What trains a model, knowing nothing of MLflow: the LightningModule (``task``: loss, metrics,
optimiser), CPU data parallelism in batch slices (``parallel``), the CPU plan and hardware
defaults (``hardware``), and tracking-free Lightning callbacks (``callbacks``)."""
