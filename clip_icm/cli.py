"""The clip-icm command line: run the main job, sweep (lambda, k) from cache, print a report,
benchmark models x datasets x trials into a leaderboard, reproduce a recorded run, export a run as
an open_clip model.

A thin layer over the flows: the options of `run`, `sweep` and `bench` are generated from the
fields of `RunConfig`, so the CLI, the deployment form and the reports name the same choices.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import traceback
import types
import typing

from pydantic import ValidationError

from clip_icm.process import Stopped, exit_now, prefect_api, quiet_prefect_errors, stoppable
from flows.config.run_config import BENCH_PER_RUN_FIELDS, RunConfig
from tasks.errors import InputError
from tasks.store.storage import remove_unfinished_writes

log = logging.getLogger("clip_icm")

# flags whose spelling predates the generated ones
FLAG_NAMES = {"use_text": "--no-text"}
# where `clip-icm bench` takes the fields it sets per run
BENCH_FLAGS = {"dataset": "--datasets", "model": "--models", "pretrained": "--models"}
EXPORT_FLAGS = ("target", "out")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_flag(name: str) -> str:
    """The command-line flag of a RunConfig field: --ks; a flag that turns a boolean off, --no-normalize."""
    if RunConfig.model_fields[name].annotation is bool:
        return FLAG_NAMES.get(name, _flag("no_" + name.removeprefix("use_")))
    return _flag(name)


def field_label(field: str, command: str = "run") -> str:
    """How errors name a field: 'config field 'ks' (--ks)', the flag the command takes it by beside the config key."""
    name = field.split(".")[0]
    if command == "export":  # its own flags, or a field of the run it reads
        return _flag(name) if name in EXPORT_FLAGS else f"the run's {name}"
    if command == "bench" and name in BENCH_FLAGS:
        return f"config field {field!r} ({BENCH_FLAGS[name]})"
    return f"config field {field!r} ({config_flag(name)})" if name in RunConfig.model_fields else f"config field {field!r}"


def describe(error: ValidationError | InputError | OSError, command: str = "run") -> str:
    """One line naming each bad field with its flag: 'config field 'lams' (--lams): ...'; a file the system could
    not read or write, with why."""
    if isinstance(error, InputError):
        return f"{field_label(error.field, command)}: {error.message}" if error.field else error.message
    if isinstance(error, OSError):
        return f"{error.filename or 'a file'}: {error.strerror or error} ({type(error).__name__})"
    problems = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "config"
        problems.append(f"{field_label(field, command)}: {problem['msg'].removeprefix('Value error, ')} "
                        f"(got {problem.get('input')!r})")
    return "; ".join(problems)


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=URL")
    return name, value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _option(name: str, info) -> tuple[list[str], dict]:
    """argparse flags and keyword arguments for one RunConfig field."""
    annotation, help_text = info.annotation, (info.description or "").replace("%", "%%")  # argparse formats help
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        annotation = next(arg for arg in args if arg is not type(None))
        args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    default = info.default
    if annotation is bool:
        return [config_flag(name)], {"dest": name, "action": "store_false", "help": f"turn off: {help_text}"}
    kwargs = {"dest": name, "help": help_text + (f" (default: {default})" if default is not None else "")}
    if origin is list:
        (item,) = args
        kwargs["nargs"] = "+"
        if typing.get_origin(item) is typing.Literal:
            kwargs["choices"] = typing.get_args(item)
        else:
            kwargs["type"] = item
    elif origin is dict and args == (str, str):
        kwargs.update(nargs="+", type=_key_value, metavar="NAME=URL")
    elif origin is dict:
        kwargs["type"] = _json_object
    elif origin is typing.Literal:
        kwargs["choices"] = args
    else:
        kwargs["type"] = annotation
    return [_flag(name)], kwargs


def _add_config_options(parser: argparse.ArgumentParser, exclude=()) -> None:
    for name, info in RunConfig.model_fields.items():
        if name in exclude:
            continue
        flags, kwargs = _option(name, info)
        parser.add_argument(*flags, **kwargs, default=argparse.SUPPRESS)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other input error (argparse prints the whole usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="clip-icm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="print the full traceback of an input error")

    run = commands.add_parser("run", help="embed, fit and evaluate one dataset and model end to end", parents=[common],
                              description="The main job: embed, fit the invariant projection, evaluate, write reports.")
    _add_config_options(run)
    sweep = commands.add_parser("sweep", help="re-evaluate a lambda x k grid from cached embeddings (loads no model)",
                                parents=[common])
    _add_config_options(sweep)

    report = commands.add_parser("report", help="print a run's report: headline, targets x methods tables, chosen (lambda, k)",
                                 parents=[common])
    report.add_argument("run", help="a run: STORE/runs/NAME (its latest execution) or STORE/runs/NAME/ENTRY")

    bench = commands.add_parser("bench", help="run models x datasets x trials and write a leaderboard", parents=[common],
                                description="One `run` per model, dataset and trial (done runs are skipped), "
                                            "then STORE/benchmarks/NAME/leaderboard.{parquet,md,tex}.")
    bench.add_argument("--models", nargs="+", required=True, metavar="NAME:PRETRAINED",
                       help="open_clip model and weights: a tag, a local checkpoint file or none, e.g. ViT-B-16:openai; "
                       "or a model carrying its weights, local-dir:DIR or hf-hub:ORG/NAME")
    bench.add_argument("--datasets", nargs="+", required=True, type=_key_value, metavar="NAME=URL",
                       help="datasets by display name, e.g. PACS=/data/PACS (or NAME=rotated-digits)")
    bench.add_argument("--trials", type=int, default=3, help="trials per model and dataset: trial t adds t to "
                       "--split-seed and --intervention-seed (default: 3)")
    bench.add_argument("--name", default="bench", help="the benchmark's folder STORE/benchmarks/NAME (default: bench)")
    _add_config_options(bench, exclude=BENCH_PER_RUN_FIELDS)

    board = commands.add_parser("leaderboard", help="rebuild a leaderboard from the runs in a store", parents=[common])
    board.add_argument("store", help="the store (path or fsspec URL)")
    board.add_argument("--name", help="the bench's runs (STORE/benchmarks/NAME); default: the latest run of "
                                      "every config, into STORE/benchmarks/all")

    export = commands.add_parser("export", help="a run's CLIP-ICM as an open_clip model folder (local-dir:DIR)",
                                 parents=[common],
                                 description="Fold the run's projection into its base model and write a folder "
                                             "that open_clip, CLIP_benchmark and the hub load as it is "
                                             "(open_clip_config.json, open_clip_model.safetensors, a README model "
                                             "card).")
    export.add_argument("run", help="a run: STORE/runs/NAME (its latest execution) or STORE/runs/NAME/ENTRY")
    export.add_argument("--target", help="the held-out target whose projection to export, where the run fitted one "
                                         "per target")
    export.add_argument("--out", required=True, help="the folder to write (new, or empty)")

    reproduce = commands.add_parser("reproduce", help="re-execute a recorded run and compare", parents=[common],
                                    description="Re-run the config in RUN_DIR/run.json against today's data and "
                                                "code into a new history entry; write reproduce.md/.parquet there.")
    reproduce.add_argument("run", metavar="RUN_DIR", help="STORE/runs/NAME (its latest execution) or STORE/runs/NAME/ENTRY")
    reproduce.add_argument("--store", help="where the new execution goes (default: the run's own store)")
    return parser


def config_from_args(args: dict) -> RunConfig:
    if "target_datasets" in args:
        names = [name for name, _ in args["target_datasets"]]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise InputError(f"{repeated[0]!r} given twice; give each target dataset one NAME=URL", "target_datasets")
        args["target_datasets"] = dict(args["target_datasets"])
    return RunConfig(**args)


def print_report(args: dict) -> None:
    """`clip-icm report`: a run's report, read from the store (no Prefect, no model)."""
    from tasks.report.run_report import read_run, run_report
    from tasks.store.history import resolve_run

    print(run_report(*read_run(resolve_run(args["run"]))))


def print_leaderboard(args: dict) -> None:
    """`clip-icm leaderboard`: rebuilt from the runs in the store (no Prefect, no model)."""
    from tasks.report.leaderboard import rebuild_leaderboard

    print_leaderboard_of(rebuild_leaderboard(args["store"], args["name"]))


def print_leaderboard_of(folder: str) -> None:
    from tasks.store.storage import join, read_bytes

    print(read_bytes(join(folder, "leaderboard.md")).decode() + f"\nleaderboard in {folder}")


def run_flows(command: str, args: dict, debug: bool = False) -> None:
    """`run`, `sweep`, `bench` and `reproduce`: the flows, with a Prefect API (a temporary server unless one is set);
    Prefect's own error records stay out of the terminal unless --debug (the CLI prints the one line)."""
    from tasks.data.datasets import one_listing_per_dataset

    with one_listing_per_dataset():  # the checks and the flows share one listing per dataset
        config = checked_config(command, args)
        from prefect.exceptions import TerminationSignal  # Prefect loads once the input is known to be good

        try:
            with prefect_api(), (contextlib.nullcontext() if debug else quiet_prefect_errors()):
                run_flow_command(command, args, config)
        except TerminationSignal as stop:  # Prefect's own SIGTERM handler, while a flow runs
            raise Stopped(signal.SIGTERM) from stop


def checked_config(command: str, args: dict) -> RunConfig | None:
    """The config of `run` or `sweep`, checked before any server starts: bad input is answered at once."""
    if command not in ("run", "sweep"):
        return None  # bench and reproduce check each run's config inside their flows
    config = config_from_args(args)  # field checks
    from flows.config.preflight import preflight

    return preflight(config, cached=command == "sweep")  # the machine, store, model, weights and dataset


def run_flow_command(command: str, args: dict, config: RunConfig | None) -> None:
    if command == "bench":
        from flows.bench import bench

        plan = {key: args.pop(key) for key in ("models", "datasets", "trials", "name")}
        print_leaderboard_of(bench(plan["models"], dict(plan["datasets"]), plan["trials"], plan["name"],
                                   config_from_args(args)))
    elif command == "reproduce":
        from flows.reproduce import reproduce
        from tasks.store.storage import join, read_bytes

        print(read_bytes(join(reproduce(args["run"], args["store"]), "reproduce.md")).decode())
    else:
        from flows.run import run
        from flows.sweep import sweep

        if command == "run":  # the same report as the UI's: headline, targets x methods, then the folder
            print_report({"run": run(config)})
        else:
            print(sweep(config))


def export_model(args: dict) -> None:
    """`clip-icm export`: the run's projection folded into its base model (no Prefect)."""
    from tasks.export.runs import export_run

    folder = export_run(args["run"], args["out"], args["target"])
    print(f"open_clip model in {folder}\n  open_clip.create_model_and_transforms('local-dir:{folder}')\n"
          f"  clip_benchmark eval --model local-dir:{folder} --model_type open_clip ...\n"
          f"what it is and what it scores: {folder / 'README.md'}")


COMMANDS = {"report": print_report, "leaderboard": print_leaderboard, "export": export_model}  # the rest run flows


def main(argv=None) -> int:
    """Exit 0 on success; 2 on bad input (one line on stderr, naming the field or file and the fix; the
    traceback with --debug); any other exception is a bug in clip-icm and keeps its traceback (exit 1)."""
    args = vars(build_parser().parse_args(argv))
    command, debug = args.pop("command"), args.pop("debug")
    store = args.get("store") or (args["run"] if command == "reproduce" else None)
    try:
        with stoppable():
            if command in COMMANDS:
                COMMANDS[command](args)
            else:
                run_flows(command, args, debug)
    except Stopped as stop:
        remove_unfinished_writes()
        print(f"clip-icm: stopped by {stop}; finished work is kept{f' on the store {store}' if store else ''}: "
              "the same command resumes where this one stopped", file=sys.stderr)
        exit_now(stop.exit_code)
    except (ValidationError, InputError, OSError) as error:
        log.debug("input error", exc_info=True)
        if debug:
            traceback.print_exc()
        print(f"clip-icm: {' '.join(describe(error, command).split())}", file=sys.stderr)  # one line, whatever it held
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
