"""One object per image or shards of a thousand: what a run's listing and one embedding pass cost on an object
store. The same small images are put on an S3-compatible server on loopback (moto, as tests/test_s3_store.py runs
it) once as a folder tree (ROOT/<domain>/<class>/<image>) and once as CLIP_benchmark's WebDataset shards
(ROOT/<domain>/test/N.tar, 1,000 images each); each is listed (with its content fingerprint) and embedded once
(original view, ICM-Tiny with random weights, on the CPU, no loader workers: every request is this process's),
then listed again as the next run would list it.
Requests are counted as the S3 client sends them, bytes as its reads return them. Prints a table and writes
bench/results/shards_vs_folders.md.

    python bench/shards_vs_folders.py [--images 20000] [--per-shard 1000] [--smoke] [--results DIR]
"""
from __future__ import annotations

import collections
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import bench_parser, parse, write_table  # noqa: E402

BUCKET = "bench"
DOMAINS, CLASSES = ("art", "photo"), tuple(f"class_{number:02d}" for number in range(10))
SERVE = """
import threading
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
threading.Event().wait()
"""


def start_server() -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-c", SERVE], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = server.stdout.readline().strip()
    if not port:
        server.kill()
        raise SystemExit("moto's S3 server did not start (pip install 'moto[server]')")
    return server, f"http://127.0.0.1:{port}"


def point_clients_at(endpoint: str) -> None:
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)


def images(count: int) -> list[tuple[str, str, str, bytes]]:
    """(domain, class, file name, JPEG bytes) of `count` small noisy images."""
    from PIL import Image

    rng, made = np.random.default_rng(0), []
    for index in range(count):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        made.append((DOMAINS[index % len(DOMAINS)], CLASSES[index // len(DOMAINS) % len(CLASSES)], f"{index:07d}.jpg",
                     buffer.getvalue()))
    return made


def write_folder(root: Path, made) -> None:
    for domain, name, file, data in made:
        (root / domain / name).mkdir(parents=True, exist_ok=True)
        (root / domain / name / file).write_bytes(data)


def write_shards(root: Path, made, per_shard: int) -> None:
    """CLIP_benchmark's layout, one folder per domain; keys <class>/<file stem>, as a ShardWriter keeping the names."""
    root.mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    for domain in DOMAINS:
        samples = [sample for sample in made if sample[0] == domain]
        shards = [samples[start : start + per_shard] for start in range(0, len(samples), per_shard)]
        (root / domain / "test").mkdir(parents=True)
        for number, shard in enumerate(shards):
            with tarfile.open(root / domain / "test" / f"{number}.tar", "w") as archive:
                for _, name, file, data in shard:
                    stem = file.split(".")[0]
                    for member, content in ((f"{name}/{stem}.jpg", data), (f"{name}/{stem}.cls",
                                                                           str(CLASSES.index(name)).encode())):
                        info = tarfile.TarInfo(member)
                        info.size = len(content)
                        archive.addfile(info, io.BytesIO(content))
        (root / domain / "test" / "nshards.txt").write_text(f"{len(shards)}\n")


class Counter:
    """Every S3 call the client makes (by operation) and the bytes its reads return."""

    def __init__(self):
        import s3fs.core

        self.calls, self.bytes = collections.Counter(), 0
        call, fetch, cat = s3fs.core.S3FileSystem._call_s3, s3fs.core.S3File._fetch_range, s3fs.core.S3FileSystem._cat_file
        counter = self

        async def counted_call(fs, method, *args, **kwargs):
            counter.calls[method if isinstance(method, str) else method.__name__] += 1
            return await call(fs, method, *args, **kwargs)

        def counted_fetch(file, start, end):
            data = fetch(file, start, end)
            counter.bytes += len(data)
            return data

        async def counted_cat(fs, path, *args, **kwargs):
            data = await cat(fs, path, *args, **kwargs)
            counter.bytes += len(data)
            return data

        s3fs.core.S3FileSystem._call_s3 = counted_call
        s3fs.core.S3File._fetch_range = counted_fetch
        s3fs.core.S3FileSystem._cat_file = counted_cat

    def reset(self):
        self.calls, self.bytes = collections.Counter(), 0


def measure(root: str, store: str, counter: Counter) -> dict:
    """List (and fingerprint) the dataset, then embed every domain's originals once."""
    import s3fs

    from tasks.data.datasets import discover
    from tasks.embed.images import embed_image_shard
    from tasks.specs import EmbedSpec
    from tasks.vocabulary import ORIGINAL

    s3fs.S3FileSystem.clear_instance_cache()
    counter.reset()
    began = time.perf_counter()
    dataset = discover(root, store=store)
    listed, listing_calls, listing_bytes = time.perf_counter(), sum(counter.calls.values()), counter.bytes
    embedding = EmbedSpec("ICM-Tiny", "none", store, device="cpu", batch_size=64, num_workers=0)
    embedded = sum(embed_image_shard(dataset, domain, ORIGINAL, embedding)["embedded"] for domain in dataset.domains)
    done = time.perf_counter()
    embedding_calls, embedding_bytes = sum(counter.calls.values()) - listing_calls, counter.bytes - listing_bytes
    kinds = ", ".join(f"{name} {count}" for name, count in sorted(counter.calls.items()))
    counter.reset()
    again = time.perf_counter()
    discover(root, store=store)  # as the next run lists it: digests and shard indexes remembered on the store
    relisted = time.perf_counter()
    return {"layout": dataset.format, "images": len(dataset.samples), "embedded": embedded,
            "files": dataset.samples["path"].nunique(),
            "listing requests": listing_calls, "embedding requests": embedding_calls,
            "MiB read (listing)": listing_bytes / 2**20, "MiB read (embedding)": embedding_bytes / 2**20,
            "listing s": listed - began, "embedding s": done - listed, "total s": done - began,
            "next listing requests": sum(counter.calls.values()), "MiB read (next listing)": counter.bytes / 2**20,
            "next listing s": relisted - again, "requests by kind (list and embed)": kinds}


def main() -> None:
    parser = bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--per-shard", type=int, default=1000)
    args = parse(parser, {"images": 200, "per_shard": 50})
    import torch

    torch.set_num_threads(2)
    server, endpoint = start_server()
    try:
        point_clients_at(endpoint)
        import s3fs

        client = s3fs.S3FileSystem(use_listings_cache=False)
        client.mkdir(BUCKET)
        made = images(args.images)
        with tempfile.TemporaryDirectory() as folder:
            write_folder(Path(folder) / "folder", made)
            write_shards(Path(folder) / "shards", made, args.per_shard)
            for layout in ("folder", "shards"):
                client.put(str(Path(folder) / layout), f"{BUCKET}/{layout}", recursive=True)
            counter = Counter()
            rows = [measure(f"s3://{BUCKET}/{layout}", str(Path(folder) / f"store-{layout}"), counter)
                    for layout in ("folder", "shards")]
    finally:
        server.terminate()
        server.wait(timeout=60)
    table = pd.DataFrame(rows)
    requests = [row["listing requests"] + row["embedding requests"] for row in rows]
    text = "\n\n".join([
        "# Shards vs folders on an object store",
        f"{args.images} JPEGs of 32x32 px ({sum(len(m[3]) for m in made) / len(made) / 1024:.1f} KiB on average) in "
        f"{len(DOMAINS)} domains x {len(CLASSES)} classes, on moto's S3 server on loopback; shards of {args.per_shard}; "
        f"listing with fingerprints, then one embedding pass (original view, ICM-Tiny random weights, CPU, batch 64, "
        f"no loader workers). {platform.machine()}, {os.cpu_count()} cores shared with other work (load average "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}); `python bench/shards_vs_folders.py --images {args.images} "
        f"--per-shard {args.per_shard}`.",
        table.to_markdown(index=False, floatfmt=".2f"),
        f"Requests to list and embed: {requests[0]} for the folder tree, {requests[1]} for the shards "
        f"({requests[0] / max(requests[1], 1):.0f}x); wall time {rows[0]['total s']:.1f} s against "
        f"{rows[1]['total s']:.1f} s ({rows[0]['total s'] / rows[1]['total s']:.1f}x). A first listing of the "
        "shards reads their tar headers (here the whole shards, through the client's read-ahead); the next listing "
        "(the next run's) finds their indexes remembered on the store and reads only the small text files. Tar pads "
        "each small image and its .cls label to 512-byte blocks behind 512-byte headers: the shards' bytes per pass.",
    ])
    print(text)
    write_table(args, "shards_vs_folders.md", text)


if __name__ == "__main__":
    main()
