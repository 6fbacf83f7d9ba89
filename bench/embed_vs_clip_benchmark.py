"""Images/s of our embedding against CLIP_benchmark's own zero-shot loop: same JPEGs, same model, same device.

CLIP_benchmark's loop is the `clip-benchmark` package's own code as `clip_benchmark eval --task
zeroshot_classification` runs it on an image folder: the model from its `load_clip` (open_clip), the dataset
an ImageFolder with that model's transform, its DataLoader settings (batch size 64, 4 workers, shuffle off,
default_collate: its CLI's defaults) and `run_classification` (encode_image, normalise, logits under
`torch.autocast(device, enabled=amp)`), its classifier built beforehand with `zero_shot_classifier`. It runs twice:
with amp (its default; bfloat16 autocast on a CPU) and without (`--no_amp`, float32 like ours on a CPU).

Ours is the embedding stage end to end on both views, as the embed flow's tasks run them
(`tasks.embed.images.embed_image_shard`: parts, the intervention drawn and applied to every image of the
intervened view, Parquet and the cache's bookkeeping, into a fresh store) with the pipeline's defaults for the
device (`auto` precision: bf16 on a CPU with native bfloat16, as CLIP_benchmark's amp), again with `--precision
fp32` (against its `--no_amp`), and with `--precision bf16` where `auto` is not already bf16. Both views count:
ours embeds every image twice, so its images/s counts 2 per image.

The loops run in turn for --rounds rounds; the table gives medians and the median of the per-round (paired)
ratios. Prints a table and writes bench/results/embed_vs_clip_benchmark-<model>-<cpu|cuda>.md.

    python bench/embed_vs_clip_benchmark.py --model ViT-B-32 --images 256 [--device cuda] [--smoke]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embed_throughput import make_jpegs, timed  # noqa: E402  (bench/: the same generated JPEGs)
from harness import bench_parser, machine, parse, write_table  # noqa: E402
from icm_core.devices import resolve_device  # noqa: E402
from tasks.data.datasets import discover  # noqa: E402
from tasks.embed.images import embed_image_shard  # noqa: E402
from tasks.embed.models import default_batch_size, default_loader_workers, effective_precision  # noqa: E402
from tasks.specs import EmbedSpec  # noqa: E402
from tasks.vocabulary import VIEWS  # noqa: E402

# clip_benchmark.cli's defaults for `eval`
CLIP_BENCHMARK_BATCH_SIZE, CLIP_BENCHMARK_WORKERS = 64, 4


def clip_benchmark_loop(model_name: str, pretrained: str, folder: Path, device: str, batch_size: int, workers: int):
    """A function that runs CLIP_benchmark's zero-shot loop over `folder` with amp on or off."""
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier
    from clip_benchmark.models import load_clip
    from torch.utils.data import default_collate

    model, transform, tokenizer = load_clip(model_type="open_clip", model_name=model_name,
                                            pretrained=None if pretrained == "none" else pretrained, cache_dir=None,
                                            device=device)
    model.eval()
    dataset = torchvision.datasets.ImageFolder(root=str(folder), transform=transform)
    classifiers = {amp: zero_shot_classifier(model, tokenizer, dataset.classes, ["a photo of a {c}."], device, amp=amp)
                   for amp in (True, False)}

    def run(amp: bool):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                             collate_fn=default_collate)
        logits, _ = run_classification(model, classifiers[amp], loader, device, amp=amp)
        assert len(logits) == len(dataset)

    return run


def main() -> None:
    parser = bench_parser(__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto: cuda where there is one, else cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parse(parser, smoke={"model": "ICM-Tiny", "images": 8, "rounds": 1})
    import tasks.embed.models  # noqa: F401  (registers ICM-Tiny with open_clip, for both loops)

    device = resolve_device(args.device)
    batch_size, workers = default_batch_size(device), default_loader_workers(device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_jpegs(root, args.images)
        data = discover(str(root))
        clip_benchmark = clip_benchmark_loop(args.model, args.pretrained, root / "domain", device,
                                             CLIP_BENCHMARK_BATCH_SIZE, CLIP_BENCHMARK_WORKERS)
        stores = iter(range(1000))

        def ours(precision="auto"):
            spec = EmbedSpec(args.model, args.pretrained, f"{tmp}/store{next(stores)}", device=device,
                             precision=precision)
            for view in VIEWS:
                embed_image_shard(data, "domain", view, spec)

        loops = {"cb_amp": lambda: clip_benchmark(True), "cb_fp32": lambda: clip_benchmark(False), "ours": ours,
                 "ours_fp32": lambda: ours("fp32")}
        if effective_precision(device) != "bf16":
            loops["ours_bf16"] = lambda: ours("bf16")
        for loop in loops.values():  # warm-up: kernels, allocator, thread pools, the model loaded once
            loop()
        rounds = [{name: timed(loop) for name, loop in loops.items()} for _ in range(args.rounds)]
    if "ours_bf16" not in loops:  # auto is bf16 here: the same loop
        rounds = [{**r, "ours_bf16": r["ours"]} for r in rounds]

    seconds = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    images = {name: args.images if name.startswith("cb") else 2 * args.images for name in seconds}
    rate = {name: images[name] / seconds[name] for name in seconds}

    def ratio(ours, theirs):  # images/s, ours over theirs, per round: both sides of a round share the machine's load
        return statistics.median((images[ours] / r[ours]) / (images[theirs] / r[theirs]) for r in rounds)

    hardware = f"GPU {torch.cuda.get_device_name(torch.device(device))}; " if device.startswith("cuda") else ""
    text = "\n".join([
        f"# embed_vs_clip_benchmark: {args.model} ({args.pretrained}), {args.images} JPEGs 256x256, device {device}",
        "",
        f"{hardware}{machine()}; torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| loop | batch | loader workers | precision | seconds (median) | images embedded | images/s |",
        "|---|---:|---:|---|---:|---:|---:|",
        f"| CLIP_benchmark run_classification, amp (its default) | {CLIP_BENCHMARK_BATCH_SIZE} | {CLIP_BENCHMARK_WORKERS} | "
        f"autocast ({'bf16' if not device.startswith('cuda') else 'fp16'}) | {seconds['cb_amp']:.2f} | {args.images} | "
        f"{rate['cb_amp']:.1f} |",
        f"| CLIP_benchmark run_classification, --no_amp | {CLIP_BENCHMARK_BATCH_SIZE} | {CLIP_BENCHMARK_WORKERS} | fp32 | "
        f"{seconds['cb_fp32']:.2f} | {args.images} | {rate['cb_fp32']:.1f} |",
        f"| ours: embed_image_shard, original + intervened views (auto precision) | {batch_size} | {workers} | "
        f"{effective_precision(device)} | {seconds['ours']:.2f} | {2 * args.images} | {rate['ours']:.1f} |",
        f"| ours, --precision fp32 | {batch_size} | {workers} | fp32 | {seconds['ours_fp32']:.2f} | {2 * args.images} | "
        f"{rate['ours_fp32']:.1f} |",
        *([f"| ours, --precision bf16 | {batch_size} | {workers} | bf16 | {seconds['ours_bf16']:.2f} | "
           f"{2 * args.images} | {rate['ours_bf16']:.1f} |"] if "ours_bf16" in loops else []),
        "",
        f"ours / CLIP_benchmark, images/s (medians of {args.rounds} paired rounds): default precisions (ours "
        f"{effective_precision(device)}, its amp) {ratio('ours', 'cb_amp'):.2f}x; both fp32 (--no_amp) "
        f"{ratio('ours_fp32', 'cb_fp32'):.2f}x; both bf16 {ratio('ours_bf16', 'cb_amp'):.2f}x",
        "",
        "command: python bench/embed_vs_clip_benchmark.py " + " ".join(sys.argv[1:]),
    ])
    print(text)
    write_table(args, f"embed_vs_clip_benchmark-{args.model}-{'cuda' if device.startswith('cuda') else 'cpu'}.md", text)


if __name__ == "__main__":
    main()
