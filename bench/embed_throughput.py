"""Images/s of (a) the plain loop a user would write, (b) the embedding task end to end, (c) encode_image alone.

Same generated JPEGs, model, batch size, precision and device for all three. (a) is torchvision
ImageFolder + DataLoader with the open_clip preprocess + encode_image; (b) is
tasks.embed.images.embed_image_shard on the original view: the part task(s) and the merge, with the
GPU input path on CUDA (JPEGs decoded on the GPU), Parquet writing and the cache bookkeeping
included, into a fresh store; (c) is encode_image over tensors that were decoded beforehand:
the compute limit. The three run in turn for --rounds rounds; the table gives each one's median
and the median of the per-round (paired) ratios b/a and b/c, so a drifting machine moves both
sides of a ratio alike. Prints a table and writes it to
bench/results/embed_throughput-<model>-<cpu|cuda>.md, with the GPU's name (--results FOLDER elsewhere).

    python bench/embed_throughput.py [--model ViT-B-32] [--images 256] [--batch-size 64] [--device auto] [--rounds 3] [--smoke]
"""
from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.data.datasets import discover  # noqa: E402
from tasks.embed.images import embed_image_shard  # noqa: E402
from tasks.specs import EmbedSpec  # noqa: E402
from tasks.vocabulary import ORIGINAL  # noqa: E402
from icm_core.devices import resolve_device  # noqa: E402
from tasks.embed.models import default_batch_size, default_loader_workers, load_model  # noqa: E402
from harness import bench_parser, cpu_model, parse, write_table  # noqa: E402


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


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(torch.device(device))}"
    return f"no GPU; CPU {cpu_model()}, {torch.get_num_threads()} torch threads"


def main() -> None:
    parser = bench_parser(__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the pipeline's default for the device")
    parser.add_argument("--num-workers", type=int, default=None, help="default: the pipeline's default for the device")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--shard-size", type=int, default=8192)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    args = parse(parser, smoke={"model": "ICM-Tiny", "images": 8, "rounds": 1})
    load_before = os.getloadavg()[0]
    device = resolve_device(args.device)
    workers = args.num_workers if args.num_workers is not None else default_loader_workers(device)
    batch_size = args.batch_size or default_batch_size(device)
    loaded = load_model(args.model, args.pretrained, device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_jpegs(root, args.images)
        data = discover(str(root))

        def plain_loop():
            folder = torchvision.datasets.ImageFolder(str(root / "domain"), transform=loaded.preprocess)
            loader = torch.utils.data.DataLoader(folder, batch_size=batch_size, num_workers=workers,
                                                 pin_memory=device.startswith("cuda"))
            for pixels, _ in loader:
                loaded.encode_images(pixels, args.precision)

        stores = iter(range(1000))

        def pipeline():
            embed_image_shard(data, "domain", ORIGINAL, EmbedSpec(
                args.model, args.pretrained, f"{tmp}/store{next(stores)}", device=device, batch_size=batch_size,
                num_workers=workers, shard_size=args.shard_size, precision=args.precision))

        decoded = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in sorted(root.rglob("*.jpg"))])

        def compute_only():
            for start in range(0, len(decoded), batch_size):
                loaded.encode_images(decoded[start : start + batch_size], args.precision)

        compute_only()  # warm-up: kernels, allocator, thread pools
        pipeline()
        rounds = [{name: timed(f) for name, f in (("a", plain_loop), ("b", pipeline), ("c", compute_only))}
                  for _ in range(args.rounds)]

    seconds = {name: statistics.median(r[name] for r in rounds) for name in "abc"}
    rate = {name: args.images / s for name, s in seconds.items()}
    b_over_a = statistics.median(r["a"] / r["b"] for r in rounds)  # throughput ratio = inverse time ratio
    b_over_c = statistics.median(r["c"] / r["b"] for r in rounds)
    text = "\n".join([
        f"# embed_throughput: {args.model} ({args.pretrained}), {args.images} JPEGs 256x256, batch {batch_size}, "
        f"device {device}, precision {args.precision}, loader workers {workers}, shard size {args.shard_size}",
        "",
        f"{machine(device)}; torch {torch.__version__}, {platform.machine()}, {time.strftime('%Y-%m-%d', time.gmtime())}; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (a busy machine makes ratios noisy)",
        "",
        "| path | seconds (median) | images/s |",
        "|---|---:|---:|",
        f"| (a) plain loop: ImageFolder + DataLoader + encode_image | {seconds['a']:.2f} | {rate['a']:.1f} |",
        f"| (b) embedding task end to end (original view: parts, merge, Parquet, cache) | {seconds['b']:.2f} | {rate['b']:.1f} |",
        f"| (c) encode_image on pre-decoded tensors | {seconds['c']:.2f} | {rate['c']:.1f} |",
        "",
        f"b/a = {b_over_a:.3f}   b/c = {b_over_c:.3f}   (medians of {args.rounds} paired rounds, a b c in turn)",
        "",
        "command: python bench/embed_throughput.py " + " ".join(sys.argv[1:]),
    ])
    print(text)
    write_table(args, f"embed_throughput-{args.model}-{'cuda' if device.startswith('cuda') else 'cpu'}.md", text)


if __name__ == "__main__":
    main()
