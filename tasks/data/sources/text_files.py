"""The small text files that travel with shard sets: class names, templates, shard counts (read bounded)."""
from __future__ import annotations

from tasks.data.sources.base import Tree
from tasks.data.sources.reading import open_regular, read_bounded
from tasks.errors import InputError

MAX_TEXT_BYTES = 16 * 2**20  # ImageNet-21k's class names are 0.3 MiB


def read_lines(tree: Tree, relative: str) -> list[str]:
    """The file's lines, stripped; fails naming the file."""
    try:
        with open_regular(tree.fs, tree.fs_path(relative)) as handle:
            return read_bounded(handle, tree.url(relative), MAX_TEXT_BYTES).decode("utf-8").splitlines()
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {tree.url(relative)!r} ({type(error).__name__}: {error}); "
                         "it must be a UTF-8 text file") from error
