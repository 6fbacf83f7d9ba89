"""Prefect tasks of clip-icm: each one step of the pipeline with its I/O."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clip-icm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+source"
