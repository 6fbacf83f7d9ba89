"""Prefect tasks of clip-icm: each one step of the pipeline with its I/O.

`__version__` is the package's one version (pyproject.toml reads it from here). It moves with every change of
what is stored (an embedding file's layout or checksum, run.json, a table's columns): every cached embedding's key
holds it, and every run.json records it (`provenance.package_version`), so a new format is never read as an old one.
"""
__version__ = "0.5.0"
