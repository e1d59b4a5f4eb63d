"""seqbench: an experiment-tracking research harness for sequence classification.

The Python API (``seqbench.api``, docs/python-api.md) is reached as ``seqbench.compose``,
``seqbench.fit``, ``seqbench.compare`` and ``seqbench.load_model``. Those names are resolved on
first use, so ``import seqbench`` loads neither torch nor MLflow: the console scripts and the
logged models, which import submodules, pay nothing for it.
"""

from typing import Any

from seqbench.version import __version__

__all__ = ["__version__", "compose", "fit", "compare", "load_model"]

_API = ("compose", "fit", "compare", "load_model")


def __getattr__(name: str) -> Any:
    """``seqbench.fit`` and the other API names, imported from ``seqbench.api`` when first used."""
    if name in _API:
        from seqbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'seqbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
