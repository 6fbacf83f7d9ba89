import io
import os
import tempfile

import numpy as np
import pytest
from PIL import Image

from tasks.specs import EmbedSpec
from tasks.store.storage import write_bytes

TINY_MODEL = "ICM-Tiny"


def tiny_embedding(store: str, **fields) -> EmbedSpec:
    """What the tests embed: the tiny architecture with random weights, into `store`."""
    return EmbedSpec(TINY_MODEL, "none", store, **fields)

# before any test module imports prefect: its own home (results cache, database), no telemetry
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="clip-icm-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# the temporary server's start-up wait: Prefect's 20 s is not enough on a loaded 2-core machine
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def colourful_image(rng, label: int, domain_index: int, size: int = 32) -> Image.Image:
    """A class-dependent pattern under a domain-dependent colour cast, with noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    pattern = np.sin((label + 1) * 3 * x + (label % 3) * 2 * y)
    cast = np.array([[1.0, 0.4, 0.2], [0.2, 1.0, 0.4], [0.4, 0.2, 1.0]])[domain_index % 3]
    pixels = 0.5 + 0.4 * pattern[..., None] * cast + 0.1 * rng.normal(size=(size, size, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def make_image_folder(root: str, domains=("art", "photo", "sketch"), classes=("bird", "cat", "dog", "fish"),
                      per_class: int = 5, corrupt=(), extra_files=True, seed: int = 0) -> str:
    """ROOT/<domain>/<class>/<image>.jpg; `corrupt` names (domain, class) folders that get a broken file."""
    rng = np.random.default_rng(seed)
    for domain_index, domain in enumerate(domains):
        for label, name in enumerate(classes):
            for index in range(per_class):
                buffer = io.BytesIO()
                colourful_image(rng, label, domain_index).save(buffer, format="JPEG", quality=95)
                write_bytes(f"{root}/{domain}/{name}/{index:03d}.jpg", buffer.getvalue())
    for domain, name in corrupt:
        write_bytes(f"{root}/{domain}/{name}/broken.jpg", b"\xff\xd8 this is not a jpeg")
    if extra_files:
        write_bytes(f"{root}/README.txt", b"not an image")
        write_bytes(f"{root}/{domains[0]}/{classes[0]}/notes.txt", b"not an image either")
    return root


def make_imagefolder(root: str, classes, per_class: int = 5, style: int = 0, patterns=None, seed: int = 0) -> str:
    """ROOT/<class>/<image>.jpg (ImageNet's layout). `patterns[i]` picks class i's image pattern (default: i),
    so datasets that name one class differently (a synset, a class index) can still draw it alike; `style`
    is the colour cast, the dataset's "domain"."""
    rng = np.random.default_rng(seed)
    for position, name in enumerate(classes):
        pattern = position if patterns is None else patterns[position]
        for index in range(per_class):
            buffer = io.BytesIO()
            colourful_image(rng, pattern, style).save(buffer, format="JPEG", quality=95)
            write_bytes(f"{root}/{name}/{index:03d}.jpg", buffer.getvalue())
    return root


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect server for the whole test session, with the start-up wait set above."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.fixture
def memory_root(request):
    import fsspec

    root = f"memory://{request.node.name}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
