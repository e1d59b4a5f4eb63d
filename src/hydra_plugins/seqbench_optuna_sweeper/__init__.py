"""A small Hydra sweeper over current Optuna (``hydra/sweeper=seqbench_optuna``).

Hydra finds it by scanning the ``hydra_plugins`` namespace package; importing
:mod:`.optuna_sweeper` registers its config in Hydra's ConfigStore. Optuna itself is imported
only when a sweep runs, so the scan stays cheap for every other Hydra command.
"""
