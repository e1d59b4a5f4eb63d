"""What a class named by a config's ``_target_`` takes: its settings, i.e. the config keys.

Some classes take part of their settings as ``**kwargs`` and hand them on, so that each default
is defined once: the encoders hand the input settings (``vocab_size``, ``embedding_dim``,
``padding``, ``input_channels``) to their base class, and ``SequenceDataModule`` hands the
batching settings to ``Batching`` (named in its ``passes_settings_to``). A class's settings are
then its own parameters and those of the classes it hands them to; both the input-kind check
and the message for a key a class does not take read them here.
"""

from __future__ import annotations

import inspect
import re

SKIPPED = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def settings_of(cls: type) -> list[str]:
    """Every keyword ``cls(...)`` accepts, the base classes' first: each ``__init__`` in the
    MRO down to the first one without ``**kwargs``, and the classes in ``passes_settings_to``."""
    chain: list[list[str]] = []
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = list(inspect.signature(init).parameters.values())[1:]  # past self
        own = [p.name for p in parameters if p.kind not in SKIPPED]
        for taker in vars(klass).get("passes_settings_to", ()):
            own += settings_of(taker)
        chain.append(own)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    names: list[str] = []
    for own in reversed(chain):
        names += [name for name in own if name not in names]
    return names


def refused_key(exc: BaseException, default_key: str) -> str:
    """The config key of the node a class refused (Hydra's ``InstantiationException`` names it)."""
    node = re.search(r"full_key: (\S+)", str(exc))
    return node.group(1) if node else default_key


def refusal_message(exc: BaseException, default_key: str) -> str:
    """What a class refused, from Hydra's ``InstantiationException``, under the config key of
    its node: a key it does not take with the keys it does (``data.batchsize is not a setting
    of SyntheticDataModule; its settings: ...``), else the class's own message."""
    cause, key = exc.__cause__, refused_key(exc, default_key)
    found = re.search(r"target '([^']+)'", str(exc))
    target = found.group(1) if found else "?"
    name = target.rsplit(".", 1)[-1]
    unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
    if not isinstance(cause, TypeError) or not unknown:
        return f"{key} ({name}) refused its settings: {cause}"
    from hydra.utils import get_class

    try:
        taken = settings_of(get_class(target))
    except (ImportError, ValueError, TypeError):
        taken = []
    return f"{key}.{unknown.group(1)} is not a setting of {name}; its settings: " + ", ".join(taken)
