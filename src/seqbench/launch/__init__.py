"""Scale-out: how jobs are launched beyond one process. DDP inside Hydra multiruns (``ddp``),
SLURM job shapes (``cluster``), Hydra callbacks run once per launch (``hydra_callbacks``), and
what Hydra says about the current job (``hydra_job``: multirun or not, sweep tags)."""
