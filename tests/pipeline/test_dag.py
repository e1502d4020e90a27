"""The DAG itself: paper preset plans without data, lint, schema errors before any job."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from sparsegen.config import load_params

pytestmark = pytest.mark.pipeline


def _job_counts(stdout: str) -> Counter[str]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts: Counter[str] = Counter()
    in_table = False
    for line in stdout.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


def test_paper_preset_plans_every_job_without_data(repo_copy: Path, sh) -> None:
    proc = sh(["snakemake", "-n", "--config", "preset=paper", "--quiet", "rules"], repo_copy)
    counts = _job_counts(proc.stdout)
    params = load_params(repo_copy / "params.yaml", overrides={"preset": "paper"})
    n_variants = sum(len(params[p]["variants"]) for p in params["papers"])
    released = {(p, v) for p in params["papers"] for v, e in params[p]["variants"].items()
                if e.get("released")}
    assert released == {("stya2k", "released"), ("stylenat", "released_ffhq256"),
                        ("stylenat", "released_ffhq1024"), ("dynast", "df_released"),
                        ("ilat", "released_ffhq")}
    sampled_only = {(p, v) for p in params["papers"] for v, e in params[p]["variants"].items()
                    if e.get("checkpoint_of")}
    assert sampled_only == {("ilat", "taming_star_ffhq")}  # Taming's weights, the LA mask
    assert set(params["papers"]) == {"stya2k", "stylenat", "dynast", "ilat"}
    # sources coco2014_train, wikiart (StyA2K and DynaST's style variant), ffhq (one download
    # for 256, 1024 and iLAT's faces), lsun_church_outdoor, deepfashion (DynaST and SDF's
    # people), celebahq_edge, dpst_pairs; iLAT's penn_action, sdf (segmentation, Places),
    # ffhq_ilat (reads ffhq's download), coco_masks
    assert counts["fetch_dataset"] == 11
    assert counts["prepare_dataset"] == 12  # ... and ffhq256, ffhq1024, lsun_church256
    # the authors' weights: a convert job each, no training; sampled and scored as the rest
    assert counts["convert"] == len(released)
    assert counts["train"] == n_variants - len(released) - len(sampled_only)
    assert counts["sample"] == counts["evaluate"] == n_variants
    assert counts["tabulate_stya2k"] == counts["tabulate_stylenat"] == 1
    assert counts["tabulate_dynast"] == counts["tabulate_ilat"] == 1
    assert counts["figures"] == 4
    assert counts["report"] == 1
    assert not (repo_copy / "data").exists()


def test_lint_is_clean(repo_copy: Path, sh) -> None:
    proc = sh(["snakemake", "--lint"], repo_copy, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_invalid_params_fail_before_any_job(repo_copy: Path, sh) -> None:
    proc = sh(["snakemake", "-n", "--config", "preset=fast"], repo_copy, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "preset: 'fast' is not allowed; allowed values: 'smoke', 'paper'" in out
    assert not (repo_copy / "logs").exists()


def test_committed_dvc_yaml_matches_params(repo_copy: Path, sh) -> None:
    proc = sh(["python", "-m", "sparsegen", "dvcgen", "--check"], repo_copy, check=False)
    assert proc.returncode == 0, proc.stderr
