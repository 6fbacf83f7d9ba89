"""What content-true fingerprints cost: listing a dataset the first time (every image's bytes hashed), again
unchanged (digests remembered on the store by each file's stamp: no image read), and again after one image was
rewritten with the same name and size (that file alone read; its domain's fingerprint changes, no other). Each
listing runs in a fresh process, as a new run would. Prints a table and writes bench/results/fingerprint_cost.md
(--results FOLDER elsewhere).

The images are random bytes written just before (the operating system's page cache holds them), so the first
listing's hashing is faster here than on a cold disk or over NFS.

    python bench/fingerprint_cost.py [--images 20000] [--kib 24] [--smoke]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness import bench_parser, machine, parse, write_table

HERE = Path(__file__).resolve().parent
DOMAINS, CLASSES = ("art", "cartoon", "photo", "sketch"), 10

# one listing in a fresh process: its wall time, the dataset's and each domain's fingerprint, how many files it read
LIST_ONCE = """
import json, sys, time
import tasks.data.fingerprints as fingerprints
from tasks.data.discover import discover_dataset
from tasks.specs import DataSpec

read = 0
hash_bytes = fingerprints._hash_bytes
def counted(fs, path):
    global read
    read += 1
    return hash_bytes(fs, path)
fingerprints._hash_bytes = counted
began = time.perf_counter()
dataset = discover_dataset.fn(DataSpec(dataset=sys.argv[1], store=sys.argv[2]))  # the task body: no Prefect server
print(json.dumps({"seconds": time.perf_counter() - began, "files_read": read, "fingerprint": dataset.fingerprint,
                  "domains": dataset.domain_fingerprints}))
"""


def make_dataset(root: Path, images: int, kib: int) -> list[Path]:
    files = []
    for index in range(images):
        path = root / DOMAINS[index % len(DOMAINS)] / f"class_{index // len(DOMAINS) % CLASSES:02d}" / f"{index:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(kib * 1024))
        files.append(path)
    return files


def list_once(root: Path, store: Path) -> dict:
    printed = subprocess.run([sys.executable, "-c", LIST_ONCE, str(root), str(store)], capture_output=True, text=True,
                             cwd=HERE.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)}, check=True)
    return json.loads(printed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--kib", type=int, default=24, help="size of each image file")
    args = parse(parser, smoke={"images": 60, "kib": 1})
    with tempfile.TemporaryDirectory() as folder:
        root, store = Path(folder) / "data", Path(folder) / "store"
        files = make_dataset(root, args.images, args.kib)
        first = list_once(root, store)
        unchanged = list_once(root, store)
        rewritten = files[len(files) // 2]
        time.sleep(0.01)  # a new modification time even on coarse clocks
        rewritten.write_bytes(os.urandom(args.kib * 1024))  # same name, same size, other bytes
        one_changed = list_once(root, store)
    changed_domains = sorted(name for name, value in one_changed["domains"].items() if value != unchanged["domains"][name])
    rows = [
        {"listing": "first (no digest remembered)", **pick(first)},
        {"listing": "again, unchanged", **pick(unchanged), "fingerprint same as before": first["fingerprint"] == unchanged["fingerprint"]},
        {"listing": "again, one image rewritten (same size)", **pick(one_changed),
         "fingerprint same as before": one_changed["fingerprint"] == unchanged["fingerprint"],
         "domains changed": ", ".join(changed_domains)},
    ]
    table = pd.DataFrame(rows).fillna("")
    text = "\n\n".join([
        "# Fingerprint cost",
        f"{args.images} images of {args.kib} KiB in {len(DOMAINS)} domains x {CLASSES} classes, local disk (page cache "
        f"warm); {machine()}; "
        f"`python bench/fingerprint_cost.py --images {args.images} --kib {args.kib}`. The rewritten image is in domain "
        f"`{rewritten.parent.parent.name}`.",
        table.to_markdown(index=False, floatfmt=".2f"),
    ])
    print(text)
    write_table(args, "fingerprint_cost.md", text)


def pick(result: dict) -> dict:
    return {"seconds": result["seconds"], "image files read": result["files_read"]}


if __name__ == "__main__":
    main()
