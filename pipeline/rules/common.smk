# Paths, resolved job settings and input functions shared by the rule files. Paths and job
# inputs come from sparsegen.layout, which also generates dvc.yaml: the two tools cannot drift.
# Papers come from the registry (sparsegen.papers), through the Layout.
import json
import re
from pathlib import Path

from sparsegen.layout import Layout
from sparsegen.weights import MANIFEST as WEIGHTS_MANIFEST

ENV = "../envs/sparsegen.yaml"  # the software of every rule (relative to pipeline/rules)
L = Layout(config)
PRESET = L.preset
RUN = L.run_pattern
GPU = 1 if PRESET == "paper" else 0
WEIGHT_FILES = {spec.filename: name for name, spec in WEIGHTS_MANIFEST.items()}


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    paper=_alternatives(config["papers"]),
    dataset=_alternatives(config["datasets"]),
    source=_alternatives({d["source"] for d in config["datasets"].values()}),
    weightfile=_alternatives(WEIGHT_FILES),


def as_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def dataset_settings(wildcards):
    return as_json(config["datasets"][wildcards.dataset])


def job_settings(wildcards, unit):
    """The settings a job receives (sparsegen.layout.Layout.job_settings): its unit's settings,
    what its weights resolve to, the fingerprint of the code it runs."""
    return as_json(L.job_settings(wildcards.paper, wildcards.variant, unit))


def train_settings(wildcards):
    return job_settings(wildcards, "train")


def evaluate_settings(wildcards):
    return job_settings(wildcards, "evaluate")


def convert_settings(wildcards):
    return job_settings(wildcards, "convert")


def raw_dir(wildcards):
    """Where the fetched archives are (synthetic sources ignore it)."""
    return L.raw(wildcards.dataset)


def source_raw_dir(wildcards):
    return L.source_raw(wildcards.source)


def fetch_inputs(wildcards):
    return L.fetch_inputs(wildcards.source)


def prepare_inputs(wildcards):
    return L.prepare_inputs(wildcards.dataset)


def weight_name(wildcards):
    return WEIGHT_FILES[wildcards.weightfile]


def train_inputs(wildcards):
    return L.train_inputs(wildcards.paper, wildcards.variant)


def convert_inputs(wildcards):
    return L.convert_inputs(wildcards.paper, wildcards.variant)


def sample_inputs(wildcards):
    return L.sample_inputs(wildcards.paper, wildcards.variant)


def evaluate_inputs(wildcards):
    return L.evaluate_inputs(wildcards.paper, wildcards.variant)


def figure_inputs(wildcards):
    return L.figure_inputs(wildcards.paper)


def code_of(unit):
    """Params function: the fingerprint of the code a paper's `unit` job runs."""
    return lambda wildcards: L.code_fingerprint(getattr(wildcards, "paper", None), unit)


def output_dir(wildcards, output):
    return str(Path(output[0]).parent)


def metrics_root(wildcards, input):
    """The experiment folder holding one folder per variant (parent of <variant>/metrics.json)."""
    return str(Path(input.metrics[0]).parent.parent)


def paper_runs_dir(wildcards):
    return L.paper_runs(wildcards.paper)


def all_tables():
    return [t for paper in config["papers"] for t in L.tables(paper)]


def all_notebooks():
    return [L.notebook(p, ext) for p in config["papers"] for ext in ("ipynb", "html")]
