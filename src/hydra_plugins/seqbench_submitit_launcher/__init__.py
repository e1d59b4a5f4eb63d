"""seqbench's submitit launchers (``hydra/launcher=slurm`` and ``hydra/launcher=slurm_local``).

Thin subclasses of ``hydra-submitit-launcher`` (the optional ``slurm`` extra) that choose the
preemption signal and derive the job shape from the trainer config (``conf/hydra/launcher/``).
"""
