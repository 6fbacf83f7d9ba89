"""Images/s of (a) the plain loop a user would write, (b) the embedding task end to end, (c) encode_image alone.

Same generated JPEGs, model, batch size and device for all three. (a) is torchvision
ImageFolder + DataLoader with the open_clip preprocess + encode_image; (b) is
tasks.embed.embed_image_shard on the original view (decoding, Parquet writing and the
cache bookkeeping included, into a fresh store); (c) is encode_image over tensors that
were decoded beforehand: the compute limit. Prints a table and writes it to
bench/results/embed_throughput.md.

    python bench/embed_throughput.py [--model ViT-B-32] [--images 256] [--batch-size 64] [--device auto]
"""
from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.datasets import discover  # noqa: E402
from tasks.embed import ORIGINAL, embed_image_shard  # noqa: E402
from tasks.models import load_model, resolve_device  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def make_jpegs(root: Path, count: int, size: int = 256) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / "domain" / f"class{index % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        (folder / f"{index:05d}.jpg").write_bytes(buffer.getvalue())


def timed(function) -> float:
    started = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    workers = args.num_workers if args.num_workers is not None else (4 if device.startswith("cuda") else 0)
    loaded = load_model(args.model, args.pretrained, device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_jpegs(root, args.images)
        data = discover(str(root))

        def plain_loop():
            folder = torchvision.datasets.ImageFolder(str(root / "domain"), transform=loaded.preprocess)
            loader = torch.utils.data.DataLoader(folder, batch_size=args.batch_size, num_workers=workers,
                                                 pin_memory=device.startswith("cuda"))
            for pixels, _ in loader:
                loaded.encode_images(pixels)

        stores = iter(range(100))

        def pipeline():
            embed_image_shard.fn(data, "domain", ORIGINAL, args.model, args.pretrained, f"{tmp}/store{next(stores)}",
                                 device=device, batch_size=args.batch_size, num_workers=workers)

        decoded = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in sorted(root.rglob("*.jpg"))])

        def compute_only():
            for start in range(0, len(decoded), args.batch_size):
                loaded.encode_images(decoded[start : start + args.batch_size])

        compute_only()  # warm-up: kernels, allocator, thread pools
        seconds = {name: min(timed(f) for _ in range(2)) for name, f in
                   (("a", plain_loop), ("b", pipeline), ("c", compute_only))}

    rate = {name: args.images / s for name, s in seconds.items()}
    text = "\n".join([
        f"# embed_throughput: {args.model} ({args.pretrained}), {args.images} JPEGs 256x256, batch {args.batch_size}, "
        f"device {device}, workers {workers}, torch {torch.__version__}, {platform.machine()}",
        "",
        "| path | seconds | images/s |",
        "|---|---:|---:|",
        f"| (a) plain loop: ImageFolder + DataLoader + encode_image | {seconds['a']:.2f} | {rate['a']:.1f} |",
        f"| (b) embedding task end to end (original view, Parquet, cache) | {seconds['b']:.2f} | {rate['b']:.1f} |",
        f"| (c) encode_image on pre-decoded tensors | {seconds['c']:.2f} | {rate['c']:.1f} |",
        "",
        f"b/a = {rate['b'] / rate['a']:.3f}   b/c = {rate['b'] / rate['c']:.3f}   (best of 2 runs each)",
    ])
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embed_throughput.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
