"""The GPU input path, checked on CPU: tensor interventions and preprocess against PIL's, the
batched decoder's fallbacks, and the assignment of tasks to GPUs."""
import io

import numpy as np
import open_clip
import pytest
import torch
from conftest import colourful_image, make_image_folder
from PIL import Image

from tasks.embed import gpu_images
from tasks.data.datasets import discover
from tasks.embed.cpu_images import pil_batches
from tasks.embed.gpu_images import TensorPreprocess, assign_devices, decode_batch, tensor_batches
from tasks.embed.intervene import intervene
from tasks.specs import FAMILIES, InterventionConfig
from tasks.store.storage import read_bytes, write_bytes

# (largest, mean) per-pixel difference (0-255) between torchvision's tensor and PIL implementations:
# PIL rounds to uint8 between colour-jitter steps (hue on near-grey pixels amplifies it) and in greyscale
TOLERANCE = {"color_jitter": (16, 2.0), "grayscale": (1, 0.6)}


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_tensor_intervention_matches_its_pil_counterpart(family):
    image = colourful_image(np.random.default_rng(0), label=2, domain_index=1, size=64)
    config = InterventionConfig()
    for sample_id in ("art/cat/001.jpg", "art/cat/002.jpg", "photo/dog/003.jpg"):
        pil_family, pil = intervene(config, image, sample_id, family)
        tensor_family, tensor = intervene(config, as_tensor(image), sample_id, family)
        assert pil_family == tensor_family == family and tensor.dtype == torch.uint8
        difference = np.abs(np.asarray(pil, float) - tensor.permute(1, 2, 0).numpy())
        largest, mean = TOLERANCE.get(family, (0, 0))
        assert difference.max() <= largest and difference.mean() <= mean
        assert np.abs(np.asarray(pil, float) - np.asarray(image, float)).max() > 10  # it did intervene


def test_the_tensor_draw_is_the_pil_draw():
    config = InterventionConfig(seed=3)
    image = colourful_image(np.random.default_rng(1), label=0, domain_index=0)
    drawn = [(intervene(config, image, f"d/c/{i}.jpg")[0], intervene(config, as_tensor(image), f"d/c/{i}.jpg")[0])
             for i in range(30)]
    assert all(pil == tensor for pil, tensor in drawn) and len({pil for pil, _ in drawn}) > 3


@pytest.mark.parametrize("size, shape", [(224, (200, 300)), (224, (333, 224)), (32, (64, 48))])
def test_tensor_preprocess_matches_open_clips_pil_preprocess(size, shape):
    preprocess = open_clip.image_transform(size, is_train=False)
    image = colourful_image(np.random.default_rng(0), label=3, domain_index=2, size=max(shape)).resize(shape[::-1])
    expected, got = preprocess(image), TensorPreprocess(preprocess)(as_tensor(image))
    assert got.shape == expected.shape == (3, size, size) and got.dtype == torch.float32
    difference = (got - expected).abs()
    assert difference.max() < 0.1 and difference.mean() < 0.01  # bicubic resize rounding: ~4/255 at worst


def test_a_preprocess_without_a_tensor_form_is_refused_by_name():
    with pytest.raises(ValueError, match="no tensor equivalent"):
        TensorPreprocess(open_clip.image_transform(224, is_train=True))


def test_tensor_batches_match_the_pil_batches_with_fallbacks_and_the_same_skip_reasons(memory_root):
    root = make_image_folder(memory_root, domains=("art",), classes=("cat", "dog"), per_class=3, corrupt=[("art", "dog")],
                             extra_files=False)
    buffer = io.BytesIO()
    colourful_image(np.random.default_rng(5), 1, 0, size=40).save(buffer, format="PNG")
    write_bytes(f"{root}/art/cat/zz.png", buffer.getvalue())  # not a JPEG: decoded with PIL
    rows = discover(root).rows().sort_values("sample_id").reset_index(drop=True)
    preprocess = open_clip.image_transform(32, is_train=False)
    config = InterventionConfig()

    class Loaded:  # what pil_batches needs of a loaded model
        device = "cpu"

    Loaded.preprocess = preprocess
    for interventions in (None, config):
        pil = list(pil_batches(Loaded, rows, interventions, batch_size=3, num_workers=0))
        tensor = list(tensor_batches(rows, preprocess, "cpu", interventions, batch_size=3, num_workers=0))
        assert [b["index"] for b in tensor] == [b["index"] for b in pil]
        assert [b["view"] for b in tensor] == [b["view"] for b in pil]
        assert [b["errors"] for b in tensor] == [b["errors"] for b in pil]
        for a, b in zip(tensor, pil):
            assert (a["pixels"] - b["pixels"]).abs().max() < 0.25  # colour jitter's rounding, through Normalize
    assert sum(len(b["errors"]) for b in pil) == 1 and pil[-1]["errors"][0][1].startswith("UnidentifiedImageError")


def test_a_jpeg_the_device_decoder_refuses_is_decoded_with_pil(monkeypatch):
    jpegs = []
    for seed in range(3):
        buffer = io.BytesIO()
        colourful_image(np.random.default_rng(seed), seed, 0, size=24 + seed).save(buffer, format="JPEG", quality=95)
        jpegs.append(buffer.getvalue())
    real = gpu_images.decode_jpeg

    def refusing(data, **kwargs):  # a decoder that cannot handle the 25-px file, alone or in a batch
        if any(len(item) == len(jpegs[1]) for item in (data if isinstance(data, list) else [data])):
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, **kwargs)

    monkeypatch.setattr(gpu_images, "decode_jpeg", refusing)
    decoded = decode_batch([*jpegs, b"\xff\xd8 broken"], "cpu")
    assert [tuple(image.shape) for image in decoded[:3]] == [(3, 24, 24), (3, 25, 25), (3, 26, 26)]
    pil = np.array(Image.open(io.BytesIO(jpegs[1])).convert("RGB"))
    assert np.abs(decoded[1].permute(1, 2, 0).numpy().astype(int) - pil).max() <= 2
    assert isinstance(decoded[3], Exception)


def test_an_image_over_the_pixel_limit_is_skipped_undecoded_on_both_paths(memory_root, monkeypatch):
    """One rule, whatever the size over the limit (PIL alone decodes images under twice the limit after a warning)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30 * 30)
    root = f"{memory_root}/data"
    for name, size, fmt in [("ok.jpg", 24, "JPEG"), ("over.jpg", 32, "JPEG"), ("far.jpg", 48, "JPEG"),
                            ("over.png", 32, "PNG"), ("ok.png", 24, "PNG")]:
        buffer = io.BytesIO()
        colourful_image(np.random.default_rng(size), 0, 0, size=size).save(buffer, format=fmt)
        write_bytes(f"{root}/art/cat/{name}", buffer.getvalue())
    rows = discover(root).rows().sort_values("sample_id").reset_index(drop=True)
    decoded_sizes = []
    real = gpu_images.decode_jpeg

    def recording(data, **kwargs):
        decoded_sizes.extend(len(item) for item in (data if isinstance(data, list) else [data]))
        return real(data, **kwargs)

    monkeypatch.setattr(gpu_images, "decode_jpeg", recording)
    preprocess = open_clip.image_transform(16, is_train=False)

    class Loaded:
        device = "cpu"

    Loaded.preprocess = preprocess
    pil = list(pil_batches(Loaded, rows, None, batch_size=8, num_workers=0))
    tensor = list(tensor_batches(rows, preprocess, "cpu", None, batch_size=8, num_workers=0))
    for batches in (pil, tensor):
        skipped = {rows["path"][index].rsplit("/", 1)[1]: reason for index, reason in batches[0]["errors"]}
        assert sorted(skipped) == ["far.jpg", "over.jpg", "over.png"]
        assert skipped["over.jpg"] == "DecompressionBombError: Image size (1024 pixels) exceeds limit of 900 pixels, " \
                                      "could be decompression bomb DOS attack."
        assert "2304 pixels" in skipped["far.jpg"]
        assert sorted(rows["path"][index].rsplit("/", 1)[1] for index in batches[0]["index"]) == ["ok.jpg", "ok.png"]
    ok_jpeg = rows.index[rows["path"].str.endswith("ok.jpg")][0]
    assert decoded_sizes == [len(read_bytes(rows["path"][ok_jpeg]))]  # the device never saw the others


def test_tasks_spread_round_robin_over_visible_gpus_one_device_each(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)  # default: this host's GPUs
    assert assign_devices(4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert assign_devices(5, "auto", visible_gpus=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert assign_devices(3, "cuda", visible_gpus=4) == ["cuda:0", "cuda:1", "cuda:2"]
    spread = assign_devices(314, "auto", visible_gpus=8)  # ImageNet's parts over an 8-GPU host
    assert max(spread.count(f"cuda:{g}") for g in range(8)) - min(spread.count(f"cuda:{g}") for g in range(8)) <= 1
    assert assign_devices(3, "cuda:1", visible_gpus=4) == ["cuda:1"] * 3  # a named device is honoured
    assert assign_devices(2, "auto", visible_gpus=1) == ["auto", "auto"]
    assert assign_devices(2, "auto", visible_gpus=0) == ["auto", "auto"]
    assert assign_devices(2, "cpu", visible_gpus=2) == ["cpu", "cpu"]
