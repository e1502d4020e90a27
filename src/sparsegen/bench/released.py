"""What checking a paper with the authors' weights costs: seconds to convert, sample and score
each released variant under the paper preset, through the functions its jobs run (`convert`,
`sample`, `evaluate` of the paper's registry entry; the Snakemake rules call exactly these).

Run where a GPU is (`python -m sparsegen.bench.released --out results/bench/released.csv`).
It needs no download: the weights are stand-ins in the official layout (same architecture,
hence the same cost as the authors' files; converting the real files adds reading them), the
feature extractors are randomly initialised (same cost), and the real images are procedural
stand-ins at the paper's size written as prepared datasets first (not timed: preparing FFHQ is
a cost of the dataset, paid once). Sample counts can be cut (`--n-256`, `--n-1024`); the CSV
then gives the measured seconds and the seconds projected linearly to the paper's counts.
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

FIELDS = ("paper", "variant", "step", "images", "seconds", "paper_images", "projected_seconds",
          "resolution", "device", "commit", "note")
NOTE = ("stand-in weights in the official layout (same architecture and cost), random-init "
        "extractors (same cost), procedural real images at the paper's size")


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_params(root: Path, n: dict[str, int]) -> dict[str, Any]:
    """params.yaml under the paper preset with stand-in real datasets at the paper's sizes and
    the sample counts cut to `n` (per StyleNAT resolution)."""
    params = load_params(overrides={"preset": "paper", "weights": "auto"})
    params["paths"] = {k: str(root / k) for k in params["paths"]}
    stand_ins = {
        "ffhq256": {"source": "smoke_faces", "size": 256, "n_train": n["256"], "n_test": 0,
                    "seed": 0},
        "ffhq1024": {"source": "smoke_faces", "size": 1024, "n_train": n["1024"], "n_test": 0,
                     "seed": 0},
        "coco2014_train": {"source": "smoke_content", "size": 512, "n_train": 1, "n_test": 15,
                           "seed": 0},
        "wikiart": {"source": "smoke_style", "size": 512, "n_train": 1, "n_test": 20, "seed": 1},
    }
    params["datasets"] = {**params["datasets"], **stand_ins}
    return params


def run(out: Path, n_256: int, n_1024: int, device_name: str = "cuda") -> Path:
    from sparsegen.data import sources

    device = torch.device(device_name)
    n = {"256": n_256, "1024": n_1024}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = bench_params(root, n)
        lay = Layout(params)
        for name in ("ffhq256", "ffhq1024", "coco2014_train", "wikiart"):
            start = time.perf_counter()
            sources.prepare(name, params["datasets"][name], None, Path(lay.prepared(name)),
                            workers=max(1, torch.get_num_threads()))
            print(f"prepared stand-in {name} in {time.perf_counter() - start:.1f} s", flush=True)
        for paper, variant in (("stya2k", "released"), ("stylenat", "released_ffhq256"),
                               ("stylenat", "released_ffhq1024")):
            spec = papers.get(paper)
            convert = lay.job_settings(paper, variant, "convert")
            evaluate = lay.job_settings(paper, variant, "evaluate")
            if paper == "stylenat":
                res = str(convert["model"]["resolution"])
                paper_n = int(evaluate["eval"]["n_samples"])
                evaluate = deep_merge(evaluate, {"eval": {"n_samples": n[res], "n_real": n[res]}})
                counts = {"images": n[res], "paper_images": paper_n}
            else:
                res = str(evaluate["eval"]["size"])
                pairs = evaluate["eval"]["n_content"] * evaluate["eval"]["n_style"]
                counts = {"images": pairs, "paper_images": pairs}
            converted = Path(lay.checkpoint(paper, variant))
            samples = Path(lay.run(paper, variant, "samples"))
            converted.parent.mkdir(parents=True, exist_ok=True)
            steps = [("convert", partial(spec.convert, convert, converted, device), None),
                     ("sample", partial(spec.sample, evaluate, converted, samples, device),
                      counts),
                     ("evaluate (cold feature cache)",
                      partial(spec.evaluate, evaluate, samples, device), counts),
                     ("evaluate (cached real features)",
                      partial(spec.evaluate, evaluate, samples, device), counts)]
            for step, fn, scaled in steps:
                seconds = _timed(fn, device)
                images = scaled["images"] if scaled else ""
                paper_images = scaled["paper_images"] if scaled else ""
                projected = seconds * paper_images / images if scaled else seconds
                rows.append({"paper": paper, "variant": variant, "step": step,
                             "images": images, "seconds": round(seconds, 2),
                             "paper_images": paper_images,
                             "projected_seconds": round(projected, 1), "resolution": res,
                             "device": device_description(device), "commit": git_commit(),
                             "note": NOTE})
                print(f"{paper} {variant} {step}: {seconds:.1f} s"
                      + (f" for {images} images (projected {projected:.0f} s for "
                         f"{paper_images})" if scaled else ""), flush=True)
            shutil.rmtree(samples, ignore_errors=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out, buf.getvalue())
    return Path(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/bench/released.csv", help="CSV to write")
    p.add_argument("--n-256", type=int, default=50000, help="FFHQ-256 samples (and real images)")
    p.add_argument("--n-1024", type=int, default=50000, help="FFHQ-1024 samples (and real)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    args = p.parse_args()
    print(f"wrote {run(Path(args.out), args.n_256, args.n_1024, args.device)}")


if __name__ == "__main__":
    main()
