"""What checking a paper with the authors' weights costs: seconds to convert, sample and score
each released variant under the paper preset, through the functions its jobs run (`convert`,
`sample`, `evaluate` of the paper's registry entry; the Snakemake rules call exactly these).

Run where a GPU is (`python -m sparsegen.bench.released --out results/bench/released.csv`).
It needs no download: the weights are stand-ins in the official layout (same architecture,
hence the same cost as the authors' files; converting the real files adds reading them), the
feature extractors are randomly initialised (same cost), and the real images are procedural
stand-ins at the paper's size written as prepared datasets first (not timed: preparing FFHQ is
a cost of the dataset, paid once). StyleNAT's FID50k is timed at two cut counts (`--n-256`,
`--n-1024`, e.g. 1000 and 3000): a step's seconds = fixed (compilation, the 510 throughput
passes, loading) + per image x count, fitted through the two points and projected to the
paper's 50,000 (`projected_seconds`); the first sample job of a process is also timed cold,
and its compilation (Flex attention) is added to the projection, since every sample job is a
fresh process. StyA2K's 300 stylisations are timed as they are.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from sparsegen import papers
from sparsegen.config import deep_merge, load_params
from sparsegen.io import write_text
from sparsegen.layout import Layout
from sparsegen.provenance import device_description, git_commit

FIELDS = ("paper", "variant", "step", "images", "seconds", "paper_images", "fixed_seconds",
          "seconds_per_image", "projected_seconds", "resolution", "device", "commit", "note")
NOTE = ("stand-in weights in the official layout (same architecture and cost), random-init "
        "extractors (same cost), procedural real images at the paper's size")
VARIANTS = {"released": "stya2k", "released_ffhq256": "stylenat",
            "released_ffhq1024": "stylenat"}
# A dry run (CPU, to check the script): one timed pass and a few StyA2K pairs.
DRY_RUN = {"stya2k": {"n_content": 1, "n_style": 2, "timing_warmup": 1, "timing_repeats": 1},
           "stylenat": {"throughput_warmup": 1, "throughput_repeats": 1}}
STEPS = ("sample", "evaluate (cold feature cache)", "evaluate (cached real features)")


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_params(root: Path, n_real: dict[str, int]) -> dict[str, Any]:
    """params.yaml under the paper preset with stand-in real datasets at the paper's sizes
    (`n_real` images per StyleNAT resolution), every path under `root`."""
    params = load_params(overrides={"preset": "paper", "weights": "auto"})
    params["paths"] = {k: str(root / k) for k in params["paths"]}
    faces = {"source": "smoke_faces", "n_test": 0, "seed": 0}
    params["datasets"] = {
        **params["datasets"],
        "ffhq256": {**faces, "size": 256, "n_train": n_real["256"]},
        "ffhq1024": {**faces, "size": 1024, "n_train": n_real["1024"]},
        "coco2014_train": {"source": "smoke_content", "size": 512, "n_train": 1, "n_test": 15,
                           "seed": 0},
        "wikiart": {"source": "smoke_style", "size": 512, "n_train": 1, "n_test": 20, "seed": 1},
    }
    return params


def _fit(points: list[tuple[int, float]], target: int) -> tuple[float, float, float]:
    """(fixed, per image, projected) through two (images, seconds) points; one point: all per
    image."""
    if len(points) < 2:
        (n, t), = points
        return 0.0, t / n, t / n * target
    (n1, t1), (n2, t2) = points[0], points[-1]
    per = (t2 - t1) / (n2 - n1)
    fixed = t1 - per * n1
    return fixed, per, fixed + per * target


def run(out: Path, counts: dict[str, list[int]], variants: list[str],
        device_name: str = "cuda", dry_run: bool = False) -> Path:
    """Time each released variant's convert, sample and evaluate steps; write the CSV."""
    from sparsegen.data import sources

    device = torch.device(device_name)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        params = bench_params(Path(tmp), {res: max(n) for res, n in counts.items()})
        lay = Layout(params)
        needed = {name for v in variants for name in
                  lay.job_settings(VARIANTS[v], v, "evaluate")["data"].values()}
        for name in sorted(needed):
            start = time.perf_counter()
            sources.prepare(name, params["datasets"][name], None, Path(lay.prepared(name)),
                            workers=max(1, torch.get_num_threads()))
            print(f"prepared stand-in {name} in {time.perf_counter() - start:.1f} s", flush=True)
        for variant in variants:
            rows += _bench_variant(lay, VARIANTS[variant], variant, counts, device, dry_run)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out, buf.getvalue())
    return Path(out)


def _bench_variant(lay: Layout, paper: str, variant: str, counts: dict[str, list[int]],
                   device: torch.device, dry_run: bool) -> list[dict[str, Any]]:
    spec = papers.get(paper)
    convert = lay.job_settings(paper, variant, "convert")
    evaluate = lay.job_settings(paper, variant, "evaluate")
    if dry_run:
        evaluate = deep_merge(evaluate, {"eval": DRY_RUN[paper]})
    if paper == "stylenat":
        res = str(convert["model"]["resolution"])
        target = int(evaluate["eval"]["n_samples"])
        runs = [deep_merge(evaluate, {"eval": {"n_samples": n, "n_real": n}})
                for n in counts[res]]
        sizes = counts[res]
    else:
        res = str(evaluate["eval"]["size"])
        target = evaluate["eval"]["n_content"] * evaluate["eval"]["n_style"]
        runs, sizes = [evaluate], [target]
    converted = Path(lay.checkpoint(paper, variant))
    samples = Path(lay.run(paper, variant, "samples"))
    converted.parent.mkdir(parents=True, exist_ok=True)
    base = {"paper": paper, "variant": variant, "resolution": res,
            "device": device_description(device), "commit": git_commit(), "note": NOTE}
    seconds = _timed(partial(spec.convert, convert, converted, device), device)
    rows = [{**base, "step": "convert", "seconds": round(seconds, 2),
             "projected_seconds": round(seconds, 1)}]
    print(f"{paper} {variant} convert: {seconds:.1f} s", flush=True)
    measured: dict[str, list[tuple[int, float]]] = {step: [] for step in STEPS}
    # The first sample job of a process compiles (Flex attention, each batch shape): timed
    # cold at the first count, then warm at every count; the difference is the compile cost
    # every fresh `sparsegen sample` job pays once.
    plan = [(runs[0], sizes[0], ("sample (cold process)",))] if paper == "stylenat" else []
    plan += [(settings, n, STEPS) for settings, n in zip(runs, sizes, strict=True)]
    for settings, n, steps in plan:
        for step in steps:
            job = partial(spec.sample, settings, converted, samples, device) \
                if step.startswith("sample") else partial(spec.evaluate, settings, samples, device)
            if step.startswith("sample"):
                shutil.rmtree(samples, ignore_errors=True)
            t = _timed(job, device)
            measured.setdefault(step, []).append((n, t))
            rows.append({**base, "step": step, "images": n, "seconds": round(t, 2)})
            print(f"{paper} {variant} {step}: {t:.1f} s for {n} images", flush=True)
    shutil.rmtree(samples, ignore_errors=True)
    compile_s = 0.0
    if "sample (cold process)" in measured:
        (n_cold, cold), = measured.pop("sample (cold process)")
        compile_s = cold - dict(measured["sample"])[n_cold]
    for step, points in measured.items():
        fixed, per, projected = _fit(points, target)
        if step == "sample":
            fixed += compile_s
            projected += compile_s
        rows.append({**base, "step": f"{step}: projected", "images": "", "seconds": "",
                     "paper_images": target, "fixed_seconds": round(fixed, 2),
                     "seconds_per_image": round(per, 6), "projected_seconds": round(projected, 1)})
        print(f"{paper} {variant} {step}: {fixed:.1f} s + {per * 1e3:.2f} ms/image -> "
              f"{projected:.0f} s for {target}" + (f" (incl. {compile_s:.0f} s compiling)"
                                                   if step == "sample" and compile_s else ""),
              flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/bench/released.csv", help="CSV to write")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="released variants to time (default: all)")
    p.add_argument("--n-256", type=int, nargs="+", default=[1000, 3000],
                   help="FFHQ-256 sample (and real) counts timed; two fit fixed + per image")
    p.add_argument("--n-1024", type=int, nargs="+", default=[50, 150],
                   help="FFHQ-1024 counts timed")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    p.add_argument("--dry-run", action="store_true",
                   help="one timed pass, two StyA2K pairs: checks the script, times nothing")
    args = p.parse_args()
    out = run(Path(args.out), {"256": args.n_256, "1024": args.n_1024}, args.variants,
              args.device, args.dry_run)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
