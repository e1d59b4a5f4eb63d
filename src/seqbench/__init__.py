"""seqbench: an experiment-tracking research harness for sequence classification."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seqbench")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
