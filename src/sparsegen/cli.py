"""`python -m sparsegen <step>`: the only entry point the Snakemake rules call.

Every value a step needs arrives on the command line (rules pass the resolved settings as JSON
through `params:`, so Snakemake's params trigger sees them); steps never read params.yaml
themselves, except the pipeline-maintenance commands (validate, dvcgen, sync).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("sparsegen")


def _settings(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--settings is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--settings must be a JSON object")
    return value


def _paper_module(paper: str, module: str) -> Any:
    try:
        return importlib.import_module(f"sparsegen.models.{paper}.{module}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(f"sparsegen.models.{paper}"):
            raise SystemExit(f"paper {paper!r} has no sparsegen.models.{paper}.{module}") from None
        raise


def _job(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Common start of a compute step: thread count, seeds, determinism; (settings, device)."""
    import torch

    from sparsegen.train.seeding import resolve_device, seed_everything

    s = args.settings
    torch.set_num_threads(args.threads)
    seed_everything(s["seed"], s["deterministic"])
    return s, resolve_device(s["device"])


def cmd_validate(args: argparse.Namespace) -> int:
    from sparsegen.config import load_params

    params = load_params(args.params)
    print(f"{args.params}: valid (preset {params['preset']})")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    if args.what == "weights":
        from sparsegen import weights

        for name in args.name:
            path = weights.fetch(name, args.dest)
            print(f"{name}: {path} verified")
        return 0
    from sparsegen.data import sources
    from sparsegen.io import write_json

    source, raw_dir = args.name[0], Path(args.raw_dir)
    sources.fetch(source, {"source": source}, raw_dir)
    files = sources.raw_files(source, {"source": source}, raw_dir)
    write_json(args.receipt, {"source": source,
                              "files": [{"path": str(f), "bytes": f.stat().st_size}
                                        for f in files]})
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
    from sparsegen.train import distributed, loop, schedules

    s, device = _job(args)
    world, device = distributed.setup(device)
    try:
        task = _paper_module(s["paper"], "task").build_task(s, device)
        t = s["train"]
        cfg = loop.LoopConfig(iterations=t["iterations"], checkpoint_every=t["checkpoint_every"],
                              log_every=t["log_every"], seed=s["seed"],
                              lr_factor=schedules.from_settings(t), stop_after=args.stop_after,
                              prefetch=max(2, args.threads))
        complete = loop.run(task, cfg, s, Path(args.run_dir), Path(args.final), Path(args.log))
    finally:
        distributed.teardown()
    if not complete and world.is_main:
        print(f"stopped after step {args.stop_after}; rerun the same command to resume")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    s, device = _job(args)
    _paper_module(s["paper"], "sampling").sample(s, Path(args.checkpoint), Path(args.out), device)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sparsegen.metrics.records import write_records

    s, device = _job(args)
    records = _paper_module(s["paper"], "evaluation").evaluate(s, Path(args.samples), device)
    write_records(args.out, records)
    for r in records:
        flag = "" if r.comparable else "  [not comparable: " + "; ".join(
            r.non_comparable_reasons) + "]"
        print(f"{r.metric} = {r.value:.4g}{flag}")
    return 0


def cmd_tabulate(args: argparse.Namespace) -> int:
    from sparsegen.provenance import git_commit
    from sparsegen.tables import tabulate

    for path in tabulate(Path(args.claims), Path(args.runs_dir), Path(args.out_dir),
                         args.preset, git_commit()):
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
    module = importlib.import_module(f"sparsegen.bench.{args.paper}")
    out = module.run(Path(args.out) if args.out else None, sizes=args.sizes,
                     device_name=args.device)
    print(out)
    return 0


def cmd_dvcgen(args: argparse.Namespace) -> int:
    from sparsegen.config import load_params
    from sparsegen.dvc_stages import check_or_write

    return check_or_write(load_params(args.params), Path(args.out), check=args.check)


def cmd_sync(args: argparse.Namespace) -> int:
    from sparsegen.sync import sync

    return sync(Path.cwd(), dry_run=args.dry_run, cores=args.cores)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsegen", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(name: str, func: Any, help: str, settings: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        if settings:
            sp.add_argument("--settings", type=_settings, required=True,
                            help="resolved settings of this job (JSON)")
            sp.add_argument("--threads", type=int, default=1)
        return sp

    sp = step("validate", cmd_validate, "validate params.yaml against its schema")
    sp.add_argument("--params", default="params.yaml")

    sp = step("fetch", cmd_fetch, "download and verify a dataset or pretrained weights")
    sp.add_argument("what", choices=("dataset", "weights"))
    sp.add_argument("--name", nargs="+", required=True,
                    help="dataset: the upstream source (datasets.<name>.source); weights: names")
    sp.add_argument("--raw-dir")
    sp.add_argument("--receipt", help="dataset: JSON listing the fetched files (rule output)")
    sp.add_argument("--dest", default="data/weights")

    sp = step("prepare", cmd_prepare, "write a prepared dataset (manifest.csv + files)", True)
    sp.add_argument("--name", required=True)
    sp.add_argument("--raw-dir")
    sp.add_argument("--out", required=True)

    sp = step("train", cmd_train, "train one variant (resumes from its last checkpoint)", True)
    sp.add_argument("--run-dir", required=True)
    sp.add_argument("--final", required=True)
    # torchrun's own parser rejects `--log` as an ambiguous prefix of its --log-dir: under
    # torchrun spell it --train-log.
    sp.add_argument("--log", "--train-log", dest="log", required=True, help="loss log (CSV)")
    sp.add_argument("--stop-after", type=int, default=None,
                    help="checkpoint and exit after this step (for time-limited jobs)")

    sp = step("sample", cmd_sample, "generate the evaluation samples of a checkpoint", True)
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--out", required=True)

    sp = step("evaluate", cmd_evaluate, "compute the paper's metrics on samples", True)
    sp.add_argument("--samples", required=True)
    sp.add_argument("--out", required=True)

    sp = step("tabulate", cmd_tabulate, "paper-vs-reproduced tables")
    for a in ("--claims", "--runs-dir", "--out-dir", "--preset"):
        sp.add_argument(a, required=True)

    sp = step("figures", cmd_figures, "execute a paper's notebook to .ipynb and offline .html")
    for a in ("--notebook", "--out-ipynb", "--out-html"):
        sp.add_argument(a, required=True)
    sp.add_argument("--param", action="append", default=[], help="name=path (repeatable)")

    sp = step("report", cmd_report, "write results/index.html")
    sp.add_argument("--results", required=True)
    sp.add_argument("--preset", required=True)

    sp = step("bench", cmd_bench, "GPU efficiency benchmark of a paper's model")
    sp.add_argument("paper", choices=("stya2k", "stylenat"))
    sp.add_argument("--out", default=None)
    sp.add_argument("--sizes", type=int, nargs="+", default=None)
    sp.add_argument("--device", default="cuda")

    sp = step("dvcgen", cmd_dvcgen, "generate dvc.yaml from params.yaml (--check: fail on drift)")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--out", default="dvc.yaml")
    sp.add_argument("--check", action="store_true")

    sp = step("sync", cmd_sync, "reconcile Snakemake's and DVC's records of what is up to date")
    sp.add_argument("--dry-run", action="store_true")
    sp.add_argument("--cores", type=int, default=1)
    return p


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors about the user's data, settings or files: shown as one message, no traceback."""
    from sparsegen.config import ParamsError
    from sparsegen.data.manifest import ManifestError
    from sparsegen.data.sources import DatasetUnavailable
    from sparsegen.download import DownloadError
    from sparsegen.io import ImageReadError
    from sparsegen.weights import WeightsError

    return (ParamsError, ManifestError, DatasetUnavailable, DownloadError, ImageReadError,
            WeightsError)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
