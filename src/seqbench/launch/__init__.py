"""Scale-out: how jobs are launched beyond one process. DDP inside Hydra multiruns (``ddp``),
SLURM job shapes (``cluster``), and Hydra callbacks run once per launch (``hydra_callbacks``)."""
