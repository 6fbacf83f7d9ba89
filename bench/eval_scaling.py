"""Leave-one-domain-out evaluation from a DomainNet-shaped embedding cache: wall time, peak RSS, time per stage.

Builds (once per scale) a synthetic cache with DomainNet's six domains at their real image
counts times --scale, 345 classes and 512-d embeddings from `icm_core.synthetic.SyntheticSCM`
(a known invariant subspace; interventions move style only), written through the project's
own writers (`tasks.embed.images.embedding_table`, `tasks.store.storage.write_parquet`) in each
layout of LAYOUTS: today's (raw embeddings, `"normalized": false`, each image's split in a split
table), a8a453d's (raw, each row's split in the embedding file) and the one from before raw embeddings
(L2-normalised, split in the file); each checkout reads the copy its own writers would have written.
Then, each in its own process so that peak RSS is its own, it
runs the domain-shift protocol as `flows.evaluate.evaluate_domain_shift` does (each domain's
moments once, as Prefect's cache gives them; selection on the sources' validation split with
the run's `tasks.fit.selection.select_by_rule` (`tasks.fit.select_projection` in code from before it); the
chosen projection's diagnostics (`tasks.fit.diagnostics.diagnose_projection`, where the code has them); the
projection stored to a file; `tasks.evaluate.predictions.evaluate_target`
on every target image) with:

  - the code in this checkout, torch probe and scikit-learn probe;
  - optionally an older checkout (--baseline PATH, e.g. `git worktree add --detach /tmp/base-88bafbd 88bafbd`):
    the flat `tasks/` with a catalog (a8a453d), or the API from before issue 10 (88bafbd, 667e57b:
    `EmbeddingIndex`, `evaluate_target(index, sources, target, projection, probe_C)`, `zero_shot_predict`,
    the scikit-learn probe only).

Time is attributed to stages by wrapping the functions the pipeline calls (exclusive time:
a read inside the moments counts as read). Prints a table and writes it to
bench/results/eval_scaling.md (--results FOLDER elsewhere). CLIP zero-shot predictions of every configuration are compared
sample by sample with the first one's.

    python bench/eval_scaling.py --scale 0.25 --baseline /tmp/old
    python bench/eval_scaling.py --smoke     # seconds: what CI runs
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from harness import bench_parser, cpu_model, load_average, parse, results_folder, write_table

HERE = Path(__file__).resolve().parent
DOMAINNET = {"clipart": 48_129, "infograph": 51_605, "painting": 72_266, "quickdraw": 172_500, "real": 172_947,
             "sketch": 69_128}
# how often style names the true class in each domain: sources disagree, so the spurious shortcut does not transfer
AGREEMENT = {"clipart": 0.6, "infograph": 0.3, "painting": 0.7, "quickdraw": 0.1, "real": 0.8, "sketch": 0.5}
LAMS = [0.1, 1.0, 10.0, 100.0]  # RunConfig's default grid; ks default to d/8, d/4, d/2, 3d/4
PROBE_C = 0.316  # RunConfig's default probe_c


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would also count the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clocks() -> tuple[float, float]:
    """(wall, CPU of every thread of this process): on a shared machine CPU seconds drift less than wall."""
    return time.perf_counter(), time.process_time()


# ---------------------------------------------------------------- cache

# How each generation of the code keeps a (domain, view)'s embeddings; every checkout reads the copy its own writers
# would have written (checkout_api says which).
LAYOUTS = {
    "split-table": {"split_column": False, "normalized": False},  # today (raw-v3): raw, the split in a split table
    "split-column": {"split_column": True, "normalized": False},  # a8a453d: raw, each row's split in the file
    "normalized": {"split_column": True, "normalized": True},  # before issue 10 (88bafbd, 667e57b): L2-normalised
}
CACHE_VERSION = 2  # bumped with LAYOUTS: a cache written by an older version of this script is written again


def build_cache(root: Path, scale: float, n_classes: int, dim: int, holdout: float = 0.2) -> dict:
    """Write the synthetic cache under root, one copy per layout (skipped when root/catalog.json describes this
    cache); returns its description: per layout its `shards`, `text_url` and (today's) `split_url`."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from icm_core.synthetic import SyntheticSCM
    from tasks import __version__
    from tasks.embed.images import IMAGE_FORMAT, IMAGE_SCHEMA, embedding_table
    from tasks.embed.text import TEXT_SCHEMA
    from tasks.store.names import stable_hash
    from tasks.store.storage import write_parquet

    wanted = {"cache_version": CACHE_VERSION, "format": IMAGE_FORMAT, "code_version": __version__, "scale": scale,
              "classes": n_classes, "dim": dim}
    described = root / "catalog.json"
    if described.exists():
        description = json.loads(described.read_text())
        if {name: description.get(name) for name in wanted} == wanted:
            return description
    # the writers before the split table stored each row's split beside its view
    schema_with_split = IMAGE_SCHEMA.insert(IMAGE_SCHEMA.get_field_index("view"), pa.field("split", pa.string()))
    layouts = {name: {"shards": {}} for name in LAYOUTS}

    def write_all(name, frame, schema, raw, metadata):
        """The table in every layout: raw or L2-normalised, with or without its split column."""
        normalized = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        key = stable_hash(name)  # named <name>-<key>.parquet, as the store names its files, the key inside
        metadata = {**metadata, "key": key}
        urls = {}
        for layout, how in LAYOUTS.items():
            urls[layout] = str(root / layout / f"{name}-{key}.parquet")
            table_schema = schema_with_split if how["split_column"] and schema is IMAGE_SCHEMA else schema
            write_parquet(embedding_table(frame, table_schema, normalized if how["normalized"] else raw,
                                          {**metadata, "normalized": how["normalized"]}), urls[layout])
        return urls

    scm = SyntheticSCM(dim=dim, n_invariant=dim // 4, n_classes=n_classes, class_separation=1.0, style_scale=1.0,
                       spurious_strength=1.0, seed=0)
    classes = [f"class{index:03d}" for index in range(n_classes)]
    train_rows, splits = {}, []
    for number, (domain, full_count) in enumerate(DOMAINNET.items()):
        n = max(2 * n_classes, round(full_count * scale))
        environment = scm.sample(n, AGREEMENT[domain], seed=number)
        rng = np.random.default_rng(100 + number)
        frame = pd.DataFrame({
            "sample_id": [f"{domain}/{classes[label]}/{i:06d}.jpg" for i, label in enumerate(environment.labels)],
            "domain": domain, "class": [classes[label] for label in environment.labels],
            "label": environment.labels.astype("int32"),
            "split": np.where(rng.random(n) < holdout, "val", "train"),
        })
        frame["path"] = "synthetic://" + frame["sample_id"]
        train_rows[domain] = int((frame["split"] == "train").sum())
        splits.append(frame[["sample_id", "domain", "split"]].assign(open_split=frame["split"]))  # the stable rule's
        for view, Z in (("original", environment.Z), ("intervened", environment.Z_intervened)):
            key = f"{domain}/{view}"
            for layout, url in write_all(key, frame.assign(view=view), IMAGE_SCHEMA, Z,
                                         {"format": IMAGE_FORMAT, "domain": domain, "view": view}).items():
                layouts[layout]["shards"][key] = url
        del environment
    split_url = str(root / "split-table" / "splits.parquet")
    write_parquet(pa.Table.from_pandas(pd.concat(splits, ignore_index=True), preserve_index=False), split_url)
    layouts["split-table"]["split_url"] = split_url
    # text: 4 templates per class around its text embedding; caption pairs differ by style only
    rng = np.random.default_rng(7)
    class_text = scm.class_embeddings
    rows, vectors = [], []
    for label, name in enumerate(classes):
        for template in range(4):
            rows.append({"class": name, "label": label, "role": "class_prompt", "pair_id": -1, "text": f"t{template} {name}"})
            vectors.append(class_text[label] + 0.05 * np.linalg.norm(class_text[label]) * rng.normal(size=dim) / np.sqrt(dim))
    style = np.hstack([np.zeros((2 * n_classes, scm.n_invariant)), rng.normal(size=(2 * n_classes, dim - scm.n_invariant))])
    style = style @ scm.mixing.T
    for pair_id in range(n_classes):
        label = pair_id % n_classes
        for role, offset in (("pair_a", 0), ("pair_b", n_classes)):
            rows.append({"class": classes[label], "label": label, "role": role, "pair_id": pair_id, "text": role})
            vectors.append(class_text[label] + style[pair_id + offset])
    for layout, url in write_all("text", pd.DataFrame(rows), TEXT_SCHEMA, np.asarray(vectors),
                                 {"classes": classes}).items():
        layouts[layout]["text_url"] = url
    description = {**wanted, "dataset_root": "synthetic://domainnet", "fingerprint": f"synthetic-{scale}",
                   "domains": list(DOMAINNET), "classes": classes, "layouts": layouts, "train_rows": train_rows,
                   "images": sum(max(2 * n_classes, round(c * scale)) for c in DOMAINNET.values())}
    described.write_text(json.dumps(description))
    return description


# ---------------------------------------------------------------- one configuration, in its own process


class StageClock:
    """Exclusive (wall, CPU) seconds per stage: entering a nested stage pauses the one around it."""

    def __init__(self):
        self.seconds = defaultdict(lambda: [0.0, 0.0])
        self.stack = []

    def _charge(self, name, began, now):
        self.seconds[name][0] += now[0] - began[0]
        self.seconds[name][1] += now[1] - began[1]

    @contextlib.contextmanager
    def stage(self, name):
        now = clocks()
        if self.stack:
            self._charge(self.stack[-1][0], self.stack[-1][1], now)
        self.stack.append([name, now])
        try:
            yield
        finally:
            name, began = self.stack.pop()
            now = clocks()
            self._charge(name, began, now)
            if self.stack:
                self.stack[-1][1] = now

    def wrap(self, owner, attribute, name):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.stage(name(*args, **kwargs) if callable(name) else name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def checkout_api(solver: str):
    """What this checkout's pipeline calls, by its layout: stage folders (tasks/<stage>/, today), the flat tasks/
    with a catalog (e.g. a8a453d), or the flat tasks/ from before issue 10 (e.g. 667e57b). Returns
    (module holding LinearProbe and the zero-shot, zero-shot function name, Catalog, select, diagnose, store,
    evaluate, moment functions, and the layout of the cache its writers write: one of LAYOUTS)."""
    api = {}
    try:  # today: stage folders, specs
        import tasks.evaluate.predictions as evaluate_module
    except ImportError:
        evaluate_module = None
    if evaluate_module is not None:
        from tasks.fit.diagnostics import diagnose_projection
        from tasks.fit.moments import accumulate_image_moments, accumulate_text_moments
        from tasks.fit.projections import store_projection
        from tasks.fit.selection import select_by_rule
        from tasks.specs import Recipe, SelectionSpec
        from tasks.store.catalog import EmbeddingCatalog

        recipe, selection = Recipe(probe=solver, probe_c=PROBE_C), SelectionSpec(tuple(LAMS))
        api.update(
            module=evaluate_module, zero_shot="zero_shot_logits", Catalog=EmbeddingCatalog,
            select=lambda per_domain, text, index, sources, target: select_by_rule.fn(
                index, per_domain, text, sources, target, None, recipe, selection),
            diagnose=diagnose_projection.fn, store=store_projection.fn,
            evaluate=lambda index, sources, target, projection: evaluate_module.evaluate_target.fn(
                index, sources, target, projection, recipe),
            moments=(accumulate_image_moments.fn, accumulate_text_moments.fn),
            layout="split-table")
        return api
    import tasks.evaluate as evaluate_module
    from tasks.fit import accumulate_image_moments, accumulate_text_moments

    api.update(module=evaluate_module, moments=(accumulate_image_moments.fn, accumulate_text_moments.fn))
    if "projection_url" in inspect.signature(evaluate_module.evaluate_target.fn).parameters:  # a8a453d: flat, a catalog
        from tasks.catalog import EmbeddingCatalog
        from tasks.diagnostics import diagnose_projection
        from tasks.fit import store_projection
        from tasks.selection import select_by_rule

        api.update(
            zero_shot="zero_shot_scores", Catalog=EmbeddingCatalog,
            select=lambda per_domain, text, index, sources, target: select_by_rule.fn(
                index, per_domain, text, sources, target, None, LAMS, None, "largest", True),
            diagnose=diagnose_projection.fn, store=store_projection.fn,
            evaluate=lambda index, sources, target, projection: evaluate_module.evaluate_target.fn(
                index, sources, target, projection, PROBE_C, "all", "default", solver),
            layout="split-column")
        return api
    # before issue 10: normalised embeddings at rest, an EmbeddingIndex, scikit-learn probe only
    from tasks.fit import EmbeddingIndex, select_projection

    if solver != "sklearn":
        raise SystemExit("this checkout has no torch probe")
    api.update(
        zero_shot="zero_shot_predict", Catalog=EmbeddingIndex,
        select=lambda per_domain, text, index, sources, target: select_projection.fn(
            sum((per_domain[d] for d in sources[1:]), per_domain[sources[0]]) + text, index, sources, None, LAMS,
            None, "largest", True),
        diagnose=None, store=None,
        evaluate=lambda index, sources, target, projection: evaluate_module.evaluate_target.fn(
            index, sources, target, projection, PROBE_C),
        layout="normalized")
    return api


def run_one(description: dict, solver: str, out: str) -> dict:
    import pandas as pd

    api = checkout_api(solver)
    evaluate_module, Catalog = api["module"], api["Catalog"]
    accumulate_image_moments, accumulate_text_moments = api["moments"]
    baseline_rss = peak_rss_mb()
    clock = StageClock()
    clock.wrap(Catalog, "load", "read")
    clock.wrap(Catalog, "class_embeddings", "read")
    clock.wrap(evaluate_module, api["zero_shot"], "zero-shot")

    class TimedProbe(evaluate_module.LinearProbe):  # the probe every layout builds from its evaluation module's namespace
        def stage(self):
            return clock.stage("probe CLIP" if self.projection is None else "probe CLIP-ICM")

        def fit(self, X, y):
            with self.stage():
                return super().fit(X, y)

        def predict(self, X):
            with self.stage():
                return super().predict(X)

        def decision_function(self, X):
            with self.stage():
                return super().decision_function(X)

    evaluate_module.LinearProbe = TimedProbe
    index = Catalog(dataset_root=description["dataset_root"], fingerprint=description["fingerprint"],
                    domains=tuple(description["domains"]), classes=tuple(description["classes"]),
                    **description["layouts"][api["layout"]])
    projections = tempfile.TemporaryDirectory()

    started = clocks()
    per_domain, predictions, folds = {}, [], []
    with clock.stage("moments"):
        text = accumulate_text_moments(index)
    for target in index.domains:
        fold_started = time.perf_counter()
        sources = [domain for domain in index.domains if domain != target]
        with clock.stage("moments"):
            for domain in sources:  # what Prefect's cache does across folds: each domain's sums once
                if domain not in per_domain:
                    per_domain[domain] = accumulate_image_moments(index, domain)
        with clock.stage("selection"):
            selection = api["select"](per_domain, text, index, sources, target)
        projection = selection.projection
        if api["diagnose"]:  # code from before issue 10 had no diagnostics, and took the projection itself
            with clock.stage("diagnostics"):
                api["diagnose"](index, selection, per_domain, text, sources, None)
            with clock.stage("selection"):
                projection = api["store"](projection, f"{projections.name}/{target}.npz")
        with clock.stage("evaluate (other)"):
            frame = api["evaluate"](index, sources, target, projection)
        predictions.append(frame[["target", "method", "sample_id", "prediction", "correct"]])
        folds.append(time.perf_counter() - fold_started)
    wall, cpu = (now - then for now, then in zip(clocks(), started))
    predictions = pd.concat(predictions, ignore_index=True)
    predictions.to_parquet(out)
    accuracy = predictions.groupby(["method", "target"])["correct"].mean().groupby("method").mean()
    return {
        "wall_s": wall, "cpu_s": cpu, "fold_s": folds, "stages": dict(clock.seconds), "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline_rss, "accuracy": accuracy.to_dict(),
    }


# ---------------------------------------------------------------- driver


def main() -> None:
    parser = bench_parser(__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.25, help="share of DomainNet's per-domain image counts")
    parser.add_argument("--classes", type=int, default=345)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--cache", default=None, help="where the synthetic cache goes (default: /tmp/eval-scaling-SCALE; "
                                                      "with --smoke, beside the table)")
    parser.add_argument("--baseline", default=None, help="checkout of older code to compare with (scikit-learn probe)")
    parser.add_argument("--solvers", nargs="+", default=["torch", "sklearn"], help="probes of this checkout to time")
    parser.add_argument("--one", nargs=3, metavar=("CODE", "SOLVER", "OUT"), help=argparse.SUPPRESS)
    args = parse(parser, smoke={"scale": 0.0005, "classes": 12, "dim": 32, "solvers": ["torch"]})
    cache = Path(args.cache or (results_folder(args) / "eval-scaling-cache" if args.smoke
                                else f"/tmp/eval-scaling-{args.scale:g}"))

    if args.one:
        code, solver, out = args.one
        sys.path.insert(0, code)
        os.chdir(code)
        description = json.loads((cache / "catalog.json").read_text())
        print(json.dumps(run_one(description, solver, out)))
        return

    sys.path.insert(0, str(HERE.parent))
    args.load_at_start = load_average()
    started = time.perf_counter()
    description = build_cache(cache, args.scale, args.classes, args.dim)
    print(f"cache: {description['images']:,} images in {cache} ({time.perf_counter() - started:.0f} s)", flush=True)

    configurations = [(f"this checkout, {solver} probe", str(HERE.parent), solver) for solver in args.solvers]
    if args.baseline:
        configurations.insert(0, (f"baseline {args.baseline}, sklearn probe", str(Path(args.baseline).resolve()), "sklearn"))
    results = []
    for number, (label, code, solver) in enumerate(configurations):
        out = str(cache / f"predictions-{number}.parquet")
        command = [sys.executable, __file__, "--cache", str(cache), "--one", code, solver, out]
        completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": code})
        if completed.returncode:
            raise SystemExit(f"{label} failed:\n{completed.stderr[-4000:]}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        results.append({"label": label, "out": out, **result})
        print(f"{label}: {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU, peak RSS {result['peak_rss_mb']:.0f} MB",
              flush=True)
    (cache / "results.json").write_text(json.dumps(results))
    args.load_at_end = load_average()
    text = report(results, description, args, cache)
    print(text)
    write_table(args, "eval_scaling.md", text)


def report(results, description, args, cache) -> str:
    import pandas as pd

    train = description["train_rows"]
    largest_train_mb = max(sum(train.values()) - train[target] for target in train) * args.dim * 4 / 2**20
    stages = ["read", "moments", "selection", "diagnostics", "zero-shot", "probe CLIP", "probe CLIP-ICM", "evaluate (other)"]
    reference = pd.read_parquet(results[0]["out"]).query("method == 'clip_zero_shot'").set_index(["target", "sample_id"])
    lines = [
        f"# eval_scaling: DomainNet-shaped leave-one-domain-out from cache, scale {args.scale:g}",
        "",
        f"{description['images']:,} images, {args.classes} classes, d={args.dim}, 6 domains; lambda grid {LAMS} x 4 k; "
        f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores shared with other work, Python {platform.python_version()}; "
        f"load average (1 / 5 / 15 min) {args.load_at_start} at the start, {args.load_at_end} at the end.",
        f"Largest fold's training set, float32: {largest_train_mb:.0f} MB.",
        "",
        "Seconds are wall / CPU (all threads of the process); peak RSS is the process's own (VmHWM).",
        "",
        "| configuration | total (s) | " + " | ".join(f"{s} (s)" for s in stages)
        + " | peak RSS (MB) | RSS after imports (MB) | CLIP LP acc | CLIP-ICM LP acc | CLIP ZS acc | ZS predictions differing |",
        "|---|" + "---:|" * (len(stages) + 7),
    ]
    for result in results:
        zero_shot = pd.read_parquet(result["out"]).query("method == 'clip_zero_shot'").set_index(["target", "sample_id"])
        differing = int((zero_shot["prediction"] != reference.loc[zero_shot.index, "prediction"]).sum())
        accuracy = result["accuracy"]
        lines.append(
            f"| {result['label']} | {result['wall_s']:.1f} / {result['cpu_s']:.1f} | "
            + " | ".join("{:.1f} / {:.1f}".format(*result["stages"].get(s, (0, 0))) for s in stages)
            + f" | {result['peak_rss_mb']:.0f} | {result['baseline_rss_mb']:.0f} | {accuracy['clip_linear_probe']:.4f} | "
            f"{accuracy['clip_icm_linear_probe']:.4f} | {accuracy['clip_zero_shot']:.4f} | {differing} / {len(zero_shot)} |"
        )
    if len(results) > 1:
        first = results[0]
        lines += ["", "Ratios to the first row:"]
        lines += [f"- {r['label']}: {r['wall_s'] / first['wall_s']:.2f}x wall, {r['cpu_s'] / first['cpu_s']:.2f}x CPU, "
                  f"{r['peak_rss_mb'] / first['peak_rss_mb']:.2f}x peak RSS, "
                  f"{(r['peak_rss_mb'] - r['baseline_rss_mb']) / (first['peak_rss_mb'] - first['baseline_rss_mb']):.2f}x "
                  "peak RSS above the RSS after imports"
                  for r in results[1:]]
    lines += ["", f"Command: python bench/eval_scaling.py {shlex.join(sys.argv[1:])} (cache in {cache})"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
