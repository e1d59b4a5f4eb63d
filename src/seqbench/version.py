"""The installed seqbench version, in a module of its own: runs and logged models record it, and
importing it from here (not from the package ``__init__``, which reaches the Python API) keeps
the import graph free of cycles."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seqbench")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
