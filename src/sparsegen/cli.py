"""`python -m sparsegen <step>`: the only entry point the Snakemake rules call.

Every value a step needs arrives on the command line (rules pass the resolved settings as JSON
through `params:`, so Snakemake's params trigger sees them; `python -m sparsegen settings`
prints what a rule would pass); steps never read params.yaml themselves, except the
pipeline-maintenance commands (validate, settings, dvcgen, sync). Papers come from the registry
(`sparsegen.papers`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sparsegen")

EXIT_USER_ERROR = 2
EXIT_TIME_LIMIT = 75  # EX_TEMPFAIL: checkpointed before the allocation ended; rerun to resume


def _settings(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--settings is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--settings must be a JSON object")
    return value


def _job(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Common start of a compute step: settings checked against the schema, thread count,
    seeds, determinism; (settings, device)."""
    import torch

    from sparsegen.config import validate_settings
    from sparsegen.train.seeding import resolve_device, seed_everything

    s = validate_settings(args.settings)
    torch.set_num_threads(args.threads)
    seed_everything(s["seed"], s["deterministic"])
    return s, resolve_device(s["device"])


def cmd_validate(args: argparse.Namespace) -> int:
    from sparsegen.config import load_params

    params = load_params(args.params)
    print(f"{args.params}: valid (preset {params['preset']})")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    """The settings JSON a rule passes to the job: unit settings, weights, code fingerprint."""
    from sparsegen.config import load_params
    from sparsegen.layout import Layout

    params = load_params(args.params, overrides={"preset": args.preset} if args.preset else None)
    settings = Layout(params).job_settings(args.paper, args.variant, args.unit)
    print(json.dumps(settings, sort_keys=True, separators=(",", ":")))
    return 0


def cmd_fetch_dataset(args: argparse.Namespace) -> int:
    from sparsegen.data import sources
    from sparsegen.io import write_json

    raw_dir = Path(args.raw_dir)
    sources.fetch(args.source, {"source": args.source}, raw_dir)
    files = sources.raw_files(args.source, {"source": args.source}, raw_dir)
    write_json(args.receipt, {"source": args.source,
                              "files": [{"path": str(f), "bytes": f.stat().st_size}
                                        for f in files]})
    return 0


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from sparsegen import weights

    for name in args.name:
        path = weights.fetch(name, args.dest)
        print(f"{name}: {path} verified")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from sparsegen.data import sources

    raw = Path(args.raw_dir) if args.raw_dir else None
    out = sources.prepare(args.name, args.settings, raw, Path(args.out), workers=args.threads)
    print(f"prepared {args.name} -> {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train; under `torchrun --nproc_per_node N -m sparsegen train ...` every process is one
    data-parallel rank (one GPU each), and rank 0 writes the checkpoints and the log."""
    from sparsegen import papers
    from sparsegen.train import distributed, loop, schedules

    started = time.monotonic()
    s, device = _job(args)
    deadline = None
    if args.time_limit_min is not None:
        deadline = started + 60 * (args.time_limit_min - args.stop_margin_min)
    world, device = distributed.setup(device)
    try:
        task = papers.get(s["paper"]).build_task(s, device)
        t = s["train"]
        if t.get("iterations") is None:  # a length in epochs: the task knows its train split
            n_train = task.train_size()
            t.update(schedules.by_epochs(t, n_train))
            print(f"length: ({t['epochs']} + {t['decay_epochs']}) epochs x ceil({n_train} / "
                  f"{t['batch_size']}) = {t['iterations']} iterations, decay from "
                  f"{t['decay_start']}", flush=True)
        cfg = loop.LoopConfig(iterations=t["iterations"], checkpoint_every=t["checkpoint_every"],
                              log_every=t["log_every"], seed=s["seed"],
                              lr_factor=schedules.from_settings(t), stop_after=args.stop_after,
                              prefetch=max(2, args.threads), keep_every=t.get("keep_every", 0),
                              deadline=deadline)
        outcome = loop.run(task, cfg, s, Path(args.run_dir), Path(args.final), Path(args.log),
                           kept_dir=Path(args.kept) if args.kept else None)
    finally:
        distributed.teardown()
    if outcome.reason == "deadline":
        if world.is_main:
            print(f"time limit: checkpointed at step {outcome.step} of {t['iterations']}, "
                  f"{args.stop_margin_min:g} min before the {args.time_limit_min:g}-min limit; "
                  "the next attempt (or the same command) resumes", file=sys.stderr)
        return EXIT_TIME_LIMIT
    if not outcome and world.is_main:
        print(f"stopped after step {outcome.step}; rerun the same command to resume")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from sparsegen import papers
    from sparsegen.config import ParamsError

    s, device = _job(args)
    if not s.get("released"):
        raise ParamsError(f"--settings: {s['paper']} variant {s['variant']!r} is not a released "
                          "variant (its params entry has no `released:` list)")
    papers.get(s["paper"]).convert(s, Path(args.out), device)
    print(f"converted {', '.join(s['released'])} -> {args.out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from sparsegen import papers

    s, device = _job(args)
    papers.get(s["paper"]).sample(s, Path(args.checkpoint), Path(args.out), device)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sparsegen import papers
    from sparsegen.metrics.records import write_records

    s, device = _job(args)
    records = papers.get(s["paper"]).evaluate(s, Path(args.samples), device)
    write_records(args.out, records)
    for r in records:
        print(f"{r.metric} = {r.value:.4g}")
    return 0


def cmd_tabulate(args: argparse.Namespace) -> int:
    from sparsegen.provenance import git_commit
    from sparsegen.tables import tabulate

    for path in tabulate(Path(args.claims), Path(args.runs_dir), Path(args.out_dir),
                         args.preset, git_commit(), available_only=args.available):
        print(path)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from sparsegen.notebooks import execute

    parameters = dict(kv.split("=", 1) for kv in args.param)
    execute(Path(args.notebook), Path(args.out_ipynb), Path(args.out_html), parameters,
            cwd=Path.cwd())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sparsegen.provenance import git_commit
    from sparsegen.report import build_index

    print(build_index(Path(args.results), args.preset, git_commit()))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sparsegen import papers
    from sparsegen.train.seeding import resolve_device

    resolve_device(args.device)  # no GPU: say so before any work
    out = papers.get(args.paper).bench(Path(args.out) if args.out else None, args.sizes,
                                       args.device)
    print(out)
    return 0


def cmd_dvcgen(args: argparse.Namespace) -> int:
    from sparsegen.config import load_params
    from sparsegen.dvc_stages import check_or_write

    return check_or_write(load_params(args.params), Path(args.out), check=args.check)


def cmd_sync(args: argparse.Namespace) -> int:
    from sparsegen.sync import sync

    return sync(Path.cwd(), dry_run=args.dry_run, cores=args.cores)


def _paper_names() -> list[str]:
    from sparsegen import papers

    return papers.names()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsegen", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(parent: Any, name: str, func: Any, help: str, settings: bool = False
             ) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        if settings:
            sp.add_argument("--settings", type=_settings, required=True,
                            help="the job's resolved settings as JSON (what the rule passes; "
                                 "print them with `python -m sparsegen settings`)")
            sp.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
        return sp

    sp = step(sub, "validate", cmd_validate, "validate params.yaml against its schema")
    sp.add_argument("--params", default="params.yaml", help="the params file (default "
                                                            "params.yaml)")

    sp = step(sub, "settings", cmd_settings,
              "print the settings JSON a job of (paper, variant) receives (e.g. for torchrun)")
    sp.add_argument("paper", choices=_paper_names(), help="a registered paper")
    sp.add_argument("variant", help="a variant of <paper>.variants in params.yaml")
    sp.add_argument("--unit", choices=("train", "convert", "evaluate"), default="train",
                    help="train (the train job), convert (a released variant's convert job) or "
                         "evaluate (the sample and evaluate jobs)")
    sp.add_argument("--params", default="params.yaml", help="the params file")
    sp.add_argument("--preset", choices=("smoke", "paper"), default=None,
                    help="override params.yaml's preset")

    help = "download and verify a dataset source or pretrained weights"
    fetch = sub.add_parser("fetch", help=help, description=help).add_subparsers(
        dest="what", required=True, metavar="WHAT")
    fp = step(fetch, "dataset", cmd_fetch_dataset, "download and verify one upstream source")
    fp.add_argument("--source", required=True,
                    help="the upstream source (params.yaml datasets.<name>.source)")
    fp.add_argument("--raw-dir", required=True, help="where the fetched files go")
    fp.add_argument("--receipt", required=True, help="JSON listing the fetched files (written "
                                                     "last)")
    fp = step(fetch, "weights", cmd_fetch_weights, "download and verify pretrained weights")
    fp.add_argument("--name", nargs="+", required=True, help="weights-manifest names")
    fp.add_argument("--dest", required=True, help="the weights folder (params.yaml "
                                                  "paths.weights)")

    sp = step(sub, "prepare", cmd_prepare, "write a prepared dataset (manifest.csv + files)",
              True)
    sp.add_argument("--name", required=True, help="the dataset (params.yaml datasets.<name>)")
    sp.add_argument("--raw-dir", help="the fetched files (real sources only)")
    sp.add_argument("--out", required=True, help="the prepared folder to write")

    sp = step(sub, "train", cmd_train, "train one variant (resumes from its last checkpoint)",
              True)
    sp.add_argument("--run-dir", required=True, help="the variant's run folder (ckpt/ inside)")
    sp.add_argument("--final", required=True, help="the final checkpoint to write")
    # torchrun's own parser rejects `--log` as an ambiguous prefix of its --log-dir: under
    # torchrun spell it --train-log.
    sp.add_argument("--log", "--train-log", dest="log", required=True,
                    help="loss log (CSV), rewritten at every logged step")
    sp.add_argument("--kept", default=None,
                    help="folder for the kept checkpoints (train.keep_every), written at the end")
    sp.add_argument("--stop-after", type=int, default=None,
                    help="checkpoint and exit after this step (rerun to resume)")
    sp.add_argument("--time-limit-min", type=float, default=None,
                    help="the job's allocation in minutes: checkpoint and exit with status "
                         f"{EXIT_TIME_LIMIT} --stop-margin-min before it ends")
    sp.add_argument("--stop-margin-min", type=float, default=0.0,
                    help="minutes before the time limit to stop (default 0)")

    sp = step(sub, "convert", cmd_convert, "convert the authors' released weights of a released "
              "variant into our checkpoint format", True)
    sp.add_argument("--out", required=True, help="converted.pt to write")

    sp = step(sub, "sample", cmd_sample, "generate the evaluation samples of a checkpoint", True)
    sp.add_argument("--checkpoint", required=True,
                    help="the variant's final.pt (its kept/ folder beside it holds the kept "
                         "checkpoints) or a released variant's converted.pt")
    sp.add_argument("--out", required=True, help="the samples folder to write")

    sp = step(sub, "evaluate", cmd_evaluate, "compute the paper's metrics on samples", True)
    sp.add_argument("--samples", required=True, help="the samples folder")
    sp.add_argument("--out", required=True, help="metrics.json to write")

    sp = step(sub, "tabulate", cmd_tabulate, "paper-vs-reproduced tables (judges comparability)")
    sp.add_argument("--claims", required=True, help="pipeline/claims/<paper>.yaml")
    sp.add_argument("--runs-dir", required=True, help="the experiment folder (one folder per "
                                                      "variant)")
    sp.add_argument("--out-dir", required=True, help="where <paper>_table<n>.md/.csv go")
    sp.add_argument("--preset", required=True, help="the preset the runs were made under")
    sp.add_argument("--available", action="store_true",
                    help="tabulate the variants evaluated so far; the others' cells say 'not "
                         "run' (e.g. after only the released variants)")

    sp = step(sub, "figures", cmd_figures,
              "execute a paper's notebook to .ipynb and offline .html")
    sp.add_argument("--notebook", required=True, help="notebooks/<paper>.ipynb")
    sp.add_argument("--out-ipynb", required=True, help="the executed notebook")
    sp.add_argument("--out-html", required=True, help="its offline HTML")
    sp.add_argument("--param", action="append", default=[],
                    help="name=path injected into the notebook's parameters cell (repeatable)")

    sp = step(sub, "report", cmd_report, "write results/index.html")
    sp.add_argument("--results", required=True, help="the results folder")
    sp.add_argument("--preset", required=True, help="the preset the results were made under")

    sp = step(sub, "bench", cmd_bench, "GPU efficiency benchmark of a paper's model")
    sp.add_argument("paper", choices=_paper_names(), help="a registered paper")
    sp.add_argument("--out", default=None, help="CSV to write (default results/bench/<paper>.csv)")
    sp.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="image sides to time (default: the paper's)")
    sp.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")

    sp = step(sub, "dvcgen", cmd_dvcgen,
              "generate dvc.yaml from params.yaml (--check: fail on drift)")
    sp.add_argument("--params", default="params.yaml", help="the params file")
    sp.add_argument("--out", default="dvc.yaml", help="the file to write")
    sp.add_argument("--check", action="store_true", help="only check that the file is current")

    sp = step(sub, "sync", cmd_sync, "reconcile Snakemake's and DVC's records of what is up to "
                                     "date")
    sp.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    sp.add_argument("--cores", type=int, default=1, help="cores for `snakemake --touch`")
    return p


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors about the user's data, settings, files or machine: one message, no traceback."""
    from sparsegen.claims import ClaimsError
    from sparsegen.config import ParamsError
    from sparsegen.data.manifest import ManifestError
    from sparsegen.data.sources import DatasetUnavailable
    from sparsegen.download import DownloadError
    from sparsegen.io import ImageReadError
    from sparsegen.papers import RegistryError
    from sparsegen.released import ConversionError
    from sparsegen.train.checkpoint import CheckpointError
    from sparsegen.train.seeding import DeviceError
    from sparsegen.weights import WeightsError

    return (ParamsError, ManifestError, DatasetUnavailable, DownloadError, ImageReadError,
            WeightsError, ClaimsError, RegistryError, CheckpointError, DeviceError,
            ConversionError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
