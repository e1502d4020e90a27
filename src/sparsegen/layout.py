"""Where every artifact lives. One place for the path scheme, used by the Snakemake rules and
the generated dvc.yaml alike, so the two tools always name the same files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class Layout:
    """Paths of one params.yaml under its active preset (runs and logs are per preset)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params
        self.preset = params["preset"]
        paths = params["paths"]
        self.raw_root = paths["raw"]
        self.prepared_root = paths["prepared"]
        self.weights_root = paths["weights"]
        self.results = paths["results"]
        self.runs = f"{paths['runs']}/{self.preset}"
        self.logs = f"logs/{self.preset}"
        self.benchmarks = f"benchmarks/{self.preset}"
        # Wildcard patterns for Snakemake.
        self.run_pattern = self.runs + "/{paper}/{experiment}/{variant}"

    # Raw downloads are per source, so datasets made from the same upstream files (FFHQ at 256
    # and at 1024) share one download.
    def source(self, dataset: str) -> str:
        return self.params["datasets"][dataset]["source"]

    def source_receipt(self, source: str) -> str:
        return f"{self.raw_root}/{source}/fetched.json"

    def source_raw(self, source: str) -> str:
        return f"{self.raw_root}/{source}"

    def receipt(self, dataset: str) -> str:
        return self.source_receipt(self.source(dataset))

    def raw(self, dataset: str) -> str:
        return self.source_raw(self.source(dataset))

    def prepared(self, dataset: str) -> str:
        return f"{self.prepared_root}/{dataset}"

    def weights_file(self, filename: str) -> str:
        return f"{self.weights_root}/{filename}"

    def paper_runs(self, paper: str) -> str:
        return f"{self.runs}/{paper}/{self.params[paper]['experiment']}"

    def run(self, paper: str, variant: str, name: str) -> str:
        """A file in a variant's run folder: final.pt, train_log.csv, samples, metrics.json."""
        return f"{self.paper_runs(paper)}/{variant}/{name}"

    def table(self, paper: str, table: str, ext: str) -> str:
        return f"{self.results}/tables/{paper}_table{table}.{ext}"

    def notebook(self, paper: str, ext: str) -> str:
        return f"{self.results}/notebooks/{paper}.{ext}"

    def figures(self, paper: str) -> str:
        return f"{self.results}/figures/{paper}"

    @property
    def report(self) -> str:
        return f"{self.results}/index.html"

    def bench(self, paper: str) -> str:
        return f"{self.results}/bench/{paper}.csv"

    # Inputs of each kind of job: the Snakemake input functions and the dvc.yaml deps both
    # come from here.

    def is_real(self, dataset: str) -> bool:
        from sparsegen.data.sources import is_real

        return is_real(self.params["datasets"][dataset]["source"])

    def prepare_inputs(self, dataset: str) -> list[str]:
        return [self.receipt(dataset)] if self.is_real(dataset) else []

    def pretrained(self, names: Iterable[str]) -> list[str]:
        """Weight files as inputs, only under `weights: pretrained` (auto never fetches)."""
        from sparsegen.weights import MANIFEST

        if self.params["weights"] != "pretrained":
            return []
        return [self.weights_file(MANIFEST[n].filename) for n in names]

    def variant_data(self, paper: str, variant: str) -> dict[str, str]:
        from sparsegen.config import resolve

        data = resolve(self.params, paper, variant, check=False)["data"]
        return {role: self.prepared(name) for role, name in data.items()}

    def train_inputs(self, paper: str, variant: str) -> dict[str, str | list[str]]:
        return {**self.variant_data(paper, variant),
                "weights": self.pretrained(self.networks(paper, variant, "train"))}

    def sample_inputs(self, paper: str, variant: str) -> dict[str, str]:
        return {"checkpoint": self.run(paper, variant, "final.pt"),
                **self.variant_data(paper, variant)}

    def networks(self, paper: str, variant: str, unit: str) -> list[str]:
        """Manifest names of the pretrained networks a unit loads."""
        from sparsegen.config import resolve
        from sparsegen.weights import EVALUATION_WEIGHTS, training_weights

        trained = training_weights(paper, resolve(self.params, paper, variant, check=False))
        return trained if unit == "train" else [*trained, *EVALUATION_WEIGHTS[paper]]

    def weights_state(self, paper: str, variant: str, unit: str) -> dict[str, str]:
        """What each network of the unit will be loaded from: file sha256 or random-init.

        Part of the job's Snakemake params, so that under `weights: auto` a weights file that
        appears (or changes) makes the jobs that load it rerun."""
        from sparsegen.weights import resolve

        return {n: resolve(n, self.params["weights"], self.weights_root).sha256
                for n in self.networks(paper, variant, unit)}

    def evaluate_inputs(self, paper: str, variant: str) -> dict[str, str | list[str]]:
        from sparsegen.weights import EVALUATION_WEIGHTS

        return {"samples": self.run(paper, variant, "samples"),
                **self.variant_data(paper, variant),  # StyleNAT's FID reads the real set
                "claims": self.claims(paper),  # the paper protocol comparability is judged by
                "weights": self.pretrained(EVALUATION_WEIGHTS[paper])}

    def figure_inputs(self, paper: str) -> dict[str, str | list[str]]:
        variants = list(self.params[paper]["variants"])
        return {
            "notebook": f"notebooks/{paper}.ipynb",
            "checkpoints": [self.run(paper, v, "final.pt") for v in variants],
            "logs": [self.run(paper, v, "train_log.csv") for v in variants],
            "samples": [self.run(paper, v, "samples") for v in variants],
            "metrics": [self.run(paper, v, "metrics.json") for v in variants],  # e.g. Fig. 3
        }

    def claims(self, paper: str) -> str:
        return f"pipeline/claims/{paper}.yaml"

    def tables(self, paper: str) -> list[str]:
        from sparsegen.tables import table_ids

        ids = table_ids(self.claims(paper))
        return [self.table(paper, n, ext) for n in ids for ext in ("md", "csv")]


def flatten(inputs: Mapping[str, str | list[str]]) -> list[str]:
    """All paths of an inputs mapping, in order."""
    out: list[str] = []
    for value in inputs.values():
        out += [value] if isinstance(value, str) else list(value)
    return out
