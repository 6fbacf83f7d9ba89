"""The clip-icm command line: run the main job, sweep (lambda, k) from cache, print a report."""
from __future__ import annotations

import argparse
import json
import sys

from flows.config import PROTOCOLS, TASK_RUNNERS, RunConfig
from tasks.datasets import ROTATED_DIGITS
from tasks.interventions import FAMILIES

DEFAULTS = RunConfig()


def _add_common(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--dataset", default=DEFAULTS.dataset,
        help=f"DomainBed folder URL (ROOT/<domain>/<class>/<image>; local, s3://, gs://, memory://) "
             f"or '{ROTATED_DIGITS}', built in (default: %(default)s)")
    add("--model", default=DEFAULTS.model, help="open_clip model name, e.g. ViT-B-32, ViT-B-16 (default: %(default)s)")
    add("--pretrained", default=DEFAULTS.pretrained,
        help="open_clip pretrained tag (e.g. openai, laion2b_s34b_b79k), a local checkpoint file, "
             "or 'none' for random weights (smoke runs only) (default: %(default)s)")
    add("--store", default=DEFAULTS.store, help="where embeddings and reports go: a path or fsspec URL (default: %(default)s)")
    add("--targets", nargs="+", help="target domains to hold out (default: every domain in turn)")
    add("--lams", nargs="+", type=float, default=DEFAULTS.lams, help="lambda grid (default: %(default)s)")
    add("--ks", nargs="+", type=int, help="k grid (default: 1/8, 1/4, 1/2, 3/4 of the embedding dimension)")
    add("--order", choices=["largest", "released"], default=DEFAULTS.order,
        help="eigenvectors kept: 'largest' (the method) or 'released' (the authors' code; reproduction only)")
    add("--no-text", dest="use_text", action="store_false", help="use image interventions only, no text pairs")
    add("--text-pairs", help="CSV/Parquet of user caption pairs (columns class, text_a, text_b) instead of the prompt bank")
    add("--interventions", nargs="+", choices=FAMILIES, help="image intervention families (default: all seven)")
    add("--intervention-seed", type=int, default=DEFAULTS.intervention_seed, help="(default: %(default)s)")
    add("--intervention-params", type=json.loads,
        help='JSON overrides, e.g. \'{"gaussian_blur": {"sigma": [0.5, 1.5]}}\'')
    add("--holdout", type=float, default=DEFAULTS.holdout, help="per-domain validation share (default: %(default)s)")
    add("--split-seed", type=int, default=DEFAULTS.split_seed, help="(default: %(default)s)")
    add("--class-policy", choices=["strict", "intersection"], default=DEFAULTS.class_policy,
        help="when domains disagree on classes: fail (strict) or keep the shared ones (default: %(default)s)")
    add("--run-name", help="run folder name under STORE/runs (default: derived from the config)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-icm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="embed, fit and evaluate one dataset and model end to end",
                              description="The main job: embed, fit the invariant projection, evaluate, write reports.")
    _add_common(run)
    run.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULTS.protocol, help="(default: %(default)s)")
    run.add_argument("--device", default=DEFAULTS.device, help="auto (cuda, mps, cpu), or a torch device (default: %(default)s)")
    run.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="(default: %(default)s)")
    run.add_argument("--num-workers", type=int, help="DataLoader workers (default: 2 on GPU, 0 on CPU)")
    run.add_argument("--task-runner", choices=TASK_RUNNERS, default=DEFAULTS.task_runner,
                     help="how embedding shards run in parallel: threads, or dask/ray to scale out (default: %(default)s)")
    run.add_argument("--max-workers", type=int, default=DEFAULTS.max_workers, help="(default: %(default)s)")

    sweep = commands.add_parser("sweep", help="re-evaluate a lambda x k grid from cached embeddings (loads no model)")
    _add_common(sweep)

    report = commands.add_parser("report", help="print a run's summary table")
    report.add_argument("run", help="the run folder (STORE/runs/NAME) or its URL")
    return parser


def main(argv=None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        if command == "report":
            from tasks.reports import read_summary, summary_markdown

            print(summary_markdown(read_summary(args["run"]), args["run"]))
        else:
            from flows.run import run
            from flows.sweep import sweep

            config = RunConfig(**args).validate()  # fail before Prefect starts or anything is embedded
            print({"run": run, "sweep": sweep}[command](config))
    except (ValueError, FileNotFoundError) as error:  # bad config or input: the message names the fix
        print(f"clip-icm: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
