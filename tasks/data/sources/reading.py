"""A dataset's bytes read as untrusted input: only regular files, and a bounded number of bytes per image.

Whatever sits among a dataset's files, a read neither blocks nor exhausts the machine: a named pipe, a device or a
socket (or a link to one) is refused before a byte is read, never opened for a blocking read (a pipe with no
writer would wait forever, a link to /dev/zero would fill memory); an image larger than the byte limit is refused
before it is decoded or hashed, from its listed size where the listing tells it, else after reading one byte past
the limit. The limit is a process setting, as PIL's pixel limit (Image.MAX_IMAGE_PIXELS) is:
CLIP_ICM_MAX_IMAGE_BYTES, 64 MiB unless set.
"""
from __future__ import annotations

import os
import stat

from fsspec.implementations.local import LocalFileSystem

from tasks.errors import InputError

MAX_IMAGE_BYTES_VARIABLE = "CLIP_ICM_MAX_IMAGE_BYTES"
DEFAULT_MAX_IMAGE_BYTES = 64 * 2**20  # 4x the largest photo of ImageNet-21k; a decoded 8k x 8k RGB image is 192 MiB
REGULAR = "file"  # what fsspec's listings call a regular file ("other": a pipe, a device, a socket)


class NotRegularFile(OSError):
    """A pipe, a device, a socket, or a link to one: never read."""


class ImageTooLarge(ValueError):
    """An image over the byte limit: refused before decoding or hashing."""


def max_image_bytes() -> int:
    """The byte limit per image: CLIP_ICM_MAX_IMAGE_BYTES, else 64 MiB."""
    value = os.environ.get(MAX_IMAGE_BYTES_VARIABLE, "")
    if not value:
        return DEFAULT_MAX_IMAGE_BYTES
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"environment variable {MAX_IMAGE_BYTES_VARIABLE}={value!r} must be a positive number of "
                         f"bytes, e.g. {DEFAULT_MAX_IMAGE_BYTES} (64 MiB, the default when it is unset)")
    return int(value)


def too_large(name: str, size: int | None, limit: int) -> ImageTooLarge:
    """The refusal of an image over the limit; `size` None where only the first limit + 1 bytes were read."""
    held = f"{size} bytes" if size is not None else "more bytes"
    return ImageTooLarge(f"{name} holds {held}, over the limit of {limit} bytes per image "
                         f"({MAX_IMAGE_BYTES_VARIABLE}); raise it to read larger images")


def open_regular(fs, path: str, **options):
    """A binary file object for `path`, refused unless it is a regular file (a link is followed to its target).

    On a local disk the file is opened without blocking (a pipe's open would wait for a writer) and checked on the
    open descriptor, so nothing can be swapped in between the check and the read. Object stores hold only objects.
    """
    if not isinstance(fs, LocalFileSystem):
        return fs.open(path, "rb", **options)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{path} is not a regular file ({file_kind(mode)}); only regular files are read")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_whole(fs, path: str, name: str, limit: int) -> bytes:
    """A whole file's bytes, refused past `limit`: on a local disk from a regular file alone, on an object store in
    one ranged request (no separate request for the object's size)."""
    if isinstance(fs, LocalFileSystem):
        with open_regular(fs, path) as handle:
            return read_bounded(handle, name, limit)
    data = fs.cat_file(path, start=0, end=limit + 1)
    if len(data) > limit:
        raise too_large(name, None, limit)
    return data


def file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a regular file"


def read_bounded(handle, name: str, limit: int) -> bytes:
    """All of a file object's bytes, refused past `limit` (one byte more is read to tell)."""
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise too_large(name, None, limit)
    return data


def regular_entries(fs, infos: dict) -> tuple[dict, dict[str, str]]:
    """({path: info} of the listed regular files, links to one included; {path: what it is} of every other entry
    but folders: pipes, devices, sockets, links to them or to nothing). Local listings call all of those, links to
    regular files too, type "other"; object stores list objects only."""
    regular, irregular = {}, {}
    for path, info in infos.items():
        kind = info.get("type")
        if kind == "directory":
            continue
        if kind == REGULAR:
            regular[path] = info
            continue
        try:
            mode = os.stat(path).st_mode if isinstance(fs, LocalFileSystem) else None
        except OSError as error:
            irregular[path] = f"a link to nothing ({type(error).__name__})"
            continue
        if mode is not None and stat.S_ISREG(mode):
            regular[path] = info
        elif mode is None or not stat.S_ISDIR(mode):
            irregular[path] = file_kind(mode) if mode is not None else str(kind)
    return regular, irregular


def refuse_irregular(root: str, base: str, irregular: dict[str, str]) -> None:
    """One line naming the entries of a dataset that are not regular files, and the fix."""
    if irregular:
        named = [f"{path[len(base):].lstrip('/')!r} ({kind})" for path, kind in sorted(irregular.items())[:3]]
        raise InputError(f"dataset root {root!r} holds {len(irregular)} entr{'y' if len(irregular) == 1 else 'ies'} "
                         f"that {'is' if len(irregular) == 1 else 'are'} not a regular file, e.g. {', '.join(named)}: "
                         "only regular files are read; remove them or replace them with the files they stand for")
