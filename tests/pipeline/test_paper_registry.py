"""A paper added exactly as the README's "Adding a paper" says (the two-stage toy paper of
tests/toy_paper) runs through the real DAG; its second stage consumes the first stage's
final.pt in Snakemake and in DVC; DVC's metrics, params, plots and experiments work on it.

The tests run in definition order on one repository copy."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from sparsegen.provenance import REPO_ROOT

pytestmark = pytest.mark.pipeline

TOY = REPO_ROOT / "tests" / "toy_paper"
RUNS = "runs/smoke/toy/reconstruct"
NOTHING = "Nothing to be done"
DVC_CLEAN = "Data and pipelines are up to date."


def add_toy_paper(repo: Path) -> None:
    """The README's "Adding a paper" steps, done by a script."""
    for folder in ("src", "pipeline", "notebooks"):  # the package, schema, claims, notebook
        shutil.copytree(TOY / folder, repo / folder, dirs_exist_ok=True)
    registry = repo / "src" / "sparsegen" / "papers.py"  # one registry line
    text = registry.read_text()
    registry.write_text(text.replace('REGISTERED = (\n', 'REGISTERED = (\n'
                                     '    "sparsegen.models.toy",\n', 1))
    schema = repo / "pipeline" / "schemas" / "params.schema.yaml"  # the papers enum
    text, n = re.subn(r"items: \{enum: \[([a-z0-9_, ]+)\]\}", r"items: {enum: [\1, toy]}",
                      schema.read_text(), count=1)
    assert n == 1, f"{schema}: the papers enum was not found"
    schema.write_text(text)
    params = repo / "params.yaml"  # its block; build only it by default (a fast test)
    text, n = re.subn(r"^papers: \[[a-z0-9_, ]+\]", "papers: [toy]", params.read_text(),
                      count=1, flags=re.MULTILINE)
    assert n == 1, f"{params}: the papers list was not found"
    params.write_text(text + (TOY / "params.toy.yaml").read_text())


def _commit(repo: Path, sh, message: str) -> None:
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


@pytest.fixture(scope="module")
def toy(repo_copy: Path, sh) -> Path:
    add_toy_paper(repo_copy)
    sh(["python", "-m", "sparsegen", "dvcgen"], repo_copy)
    _commit(repo_copy, sh, "add the toy paper")
    sh(["snakemake", "--cores", "2"], repo_copy)
    return repo_copy


def test_the_toy_paper_runs_through_the_dag(toy: Path) -> None:
    table = (toy / "results" / "tables" / "toy_table1.md").read_text()
    assert "| Refined | `refined` | 0.05 |" in table and "Not comparable" in table
    assert (toy / RUNS / "autoencoder" / "final.pt").is_file()
    assert not (toy / RUNS / "autoencoder" / "samples").exists()  # stage `encode`: not scored
    metrics = json.loads((toy / RUNS / "refined" / "metrics.json").read_text())
    assert set(metrics["summary"]) == {"l1"}
    assert (toy / "results" / "figures" / "toy" / "training_curves.png").is_file()
    assert (toy / "results" / "notebooks" / "toy.html").is_file()


def test_the_upstream_checkpoint_is_an_input_in_both_tools(toy: Path, sh) -> None:
    upstream = f"{RUNS}/autoencoder/final.pt"
    stages = yaml.safe_load((toy / "dvc.yaml").read_text())["stages"]
    assert upstream in stages["train-toy-refined"]["deps"]
    assert upstream in stages["evaluate-toy-refined"]["deps"]
    assert "toy.variants.autoencoder" in stages["train-toy-refined"]["params"]
    assert "evaluate-toy-autoencoder" not in stages
    plan = sh(["snakemake", "-n", "--forceall", f"{RUNS}/refined/final.pt"], toy).stdout
    assert re.search(r"rule train:\n\s+input: [^\n]*" + re.escape(upstream), plan), plan


def test_changing_the_upstream_variant_stales_its_consumer_in_both_tools(toy: Path, sh
                                                                        ) -> None:
    sh(["python", "-m", "sparsegen", "sync"], toy)
    assert DVC_CLEAN in sh(["dvc", "status"], toy).stdout
    assert NOTHING in sh(["snakemake", "-n"], toy).stdout
    params = toy / "params.yaml"
    doc = yaml.safe_load(params.read_text())
    doc["toy"]["variants"]["autoencoder"]["train"] = {"lr": 0.02}
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    status = json.loads(sh(["dvc", "status", "--json"], toy).stdout)
    # the consumer's train and evaluate stages (its sampling runs the upstream model too)
    assert set(status) == {"train-toy-autoencoder", "train-toy-refined", "evaluate-toy-refined"}
    plan = sh(["snakemake", "-n"], toy).stdout
    trained = set(re.findall(r"rule train:\n(?:\s+\S.*\n)*?\s+wildcards: [^\n]*variant=(\w+)",
                             plan))
    assert trained == {"autoencoder", "refined"}, plan
    out = sh(["dvc", "repro"], toy).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert {"train-toy-autoencoder", "train-toy-refined", "evaluate-toy-refined"} <= ran
    assert DVC_CLEAN in sh(["dvc", "status"], toy).stdout
    assert NOTHING in sh(["snakemake", "-n"], toy).stdout
    _commit(toy, sh, "autoencoder lr 0.02")


def test_dvc_metrics_params_and_plots(toy: Path, sh) -> None:
    shown = sh(["dvc", "metrics", "show", "--json"], toy).stdout
    assert "summary" in shown and "l1" in shown
    params = toy / "params.yaml"
    doc = yaml.safe_load(params.read_text())
    doc["toy"]["eval"]["n_images"] = 6
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    diff = sh(["dvc", "params", "diff"], toy).stdout
    assert "toy.eval.n_images" in diff and "8" in diff and "6" in diff
    sh(["git", "checkout", "--", "params.yaml"], toy)
    sh(["dvc", "plots", "show", "-o", "plots_out"], toy)
    assert (toy / "plots_out" / "index.html").is_file()


def test_dvc_experiments_run_and_show(toy: Path, sh) -> None:
    sh(["dvc", "exp", "run", "-S", "toy.train.lr=0.005"], toy, timeout=1200)
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], toy).stdout)
    text = json.dumps(shown)
    assert "0.005" in text and "l1" in text
