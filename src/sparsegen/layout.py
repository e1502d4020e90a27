"""Where every artifact lives, and what each kind of job reads. One place for the path scheme,
used by the Snakemake rules and the generated dvc.yaml alike, so the two tools always name the
same files; the papers themselves come from the registry (`sparsegen.papers`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sparsegen import papers
from sparsegen.weights import MANIFEST

# Files of a variant's run folder that its jobs write.
FINAL = "final.pt"            # train: the trained modules
CONVERTED = "converted.pt"    # convert: a released variant's modules, from the authors' weights
TRAIN_LOG = "train_log.csv"   # train: losses per logged step
KEPT = "kept"                 # train: checkpoints kept for selection (index.json + files)
SAMPLES = "samples"           # sample: what the paper's metrics read
METRICS = "metrics.json"      # evaluate: one record per metric


def prepared_dir(paths: Mapping[str, str], dataset: str) -> str:
    """The prepared folder of `dataset` under params.yaml `paths`."""
    return f"{paths['prepared']}/{dataset}"


def dataset_dir(settings: Mapping[str, Any], role: str) -> Path:
    """The prepared folder a job reads for `role` (e.g. content, style, images)."""
    return Path(prepared_dir(settings["paths"], settings["datasets"][role]["name"]))


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
        return prepared_dir(self.params["paths"], dataset)

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

    def claims(self, paper: str) -> str:
        return f"pipeline/claims/{paper}.yaml"

    # Variants and their links.

    def variants(self, paper: str) -> list[str]:
        """Every trained variant (with the smoke preset's showcase)."""
        from sparsegen.config import variant_entries

        return [v for v, entry in variant_entries(self.params, paper).items()
                if not entry.get("released") and not entry.get("checkpoint_of")]

    def released(self, paper: str) -> list[str]:
        """Sample-only variants of the authors' released weights (a convert job, no training)."""
        from sparsegen.config import variant_entries

        return [v for v, entry in variant_entries(self.params, paper).items()
                if entry.get("released")]

    def checkpoint(self, paper: str, variant: str) -> str:
        """What a variant's sample job loads: its trained final.pt, its converted.pt, or the
        final.pt of the variant it is a `checkpoint_of` (sampled with its own settings)."""
        from sparsegen.config import variant_entries

        of = variant_entries(self.params, paper)[variant].get("checkpoint_of")
        if of is not None:
            return self.run(paper, of, FINAL)
        return self.run(paper, variant, CONVERTED if variant in self.released(paper) else FINAL)

    def evaluated(self, paper: str) -> list[str]:
        """Variants whose stage is sampled and scored (all, unless a stage only feeds another)."""
        from sparsegen.config import variant_entries

        spec = papers.get(paper)
        return [v for v, entry in variant_entries(self.params, paper).items()
                if papers.stage_of(spec, entry).evaluated]

    def upstream(self, paper: str, variant: str) -> dict[str, str]:
        """role -> final.pt of each variant this variant's training `uses`."""
        from sparsegen.config import variant_entries

        uses = variant_entries(self.params, paper)[variant].get("uses", {})
        return {f"uses_{role}": self.run(paper, up, FINAL) for role, up in uses.items()}

    # Inputs of each kind of job: the Snakemake input functions and the dvc.yaml deps both
    # come from here.

    def is_real(self, dataset: str) -> bool:
        from sparsegen.data.sources import is_real

        return is_real(self.params["datasets"][dataset]["source"])

    def read_sources(self, source: str) -> list[str]:
        """Sources whose fetched files a source's fetch and prepare read (`sources.reads`)."""
        from sparsegen.data.sources import reads

        return list(reads(source))

    def fetch_inputs(self, source: str) -> list[str]:
        """Receipts a source's fetch needs first (the downloads it prepares from)."""
        return [self.source_receipt(s) for s in self.read_sources(source)]

    def prepare_inputs(self, dataset: str) -> list[str]:
        if not self.is_real(dataset):
            return []
        return [self.receipt(dataset), *self.fetch_inputs(self.source(dataset))]

    def pretrained(self, names: Iterable[str]) -> list[str]:
        """Weight files as inputs, only under `weights: pretrained` (auto never fetches)."""
        if self.params["weights"] != "pretrained":
            return []
        return [self.weights_file(MANIFEST[n].filename) for n in names]

    def variant_data(self, paper: str, variant: str) -> dict[str, str]:
        from sparsegen.config import resolve

        data = resolve(self.params, paper, variant, check=False).get("data", {})
        return {role: self.prepared(name) for role, name in data.items() if name is not None}

    def networks(self, paper: str, variant: str, unit: str) -> list[str]:
        """Manifest names of the pretrained networks a unit loads (`evaluate` covers the
        sample step too: it runs the trained model, whose own networks it loads)."""
        from sparsegen.config import resolve

        spec = papers.get(paper)
        settings = resolve(self.params, paper, variant, check=False)
        trained = spec.training_networks(settings)
        if unit == "train":
            return trained
        return list(dict.fromkeys([*trained, *spec.evaluation_networks(settings)]))

    def weights_state(self, paper: str, variant: str, unit: str) -> dict[str, str]:
        """What each network of the unit will be loaded from: file sha256 or random-init.

        Part of the job's Snakemake params, so that under `weights: auto` a weights file that
        appears (or changes) makes the jobs that load it rerun."""
        from sparsegen.weights import resolve

        return {n: resolve(n, self.params["weights"], self.weights_root).sha256
                for n in self.networks(paper, variant, unit)}

    def train_inputs(self, paper: str, variant: str) -> dict[str, str | list[str]]:
        return {**self.variant_data(paper, variant), **self.upstream(paper, variant),
                "weights": self.pretrained(self.networks(paper, variant, "train"))}

    def released_files(self, paper: str, variant: str) -> list[str]:
        """The authors' files a convert job reads, as inputs (`sparsegen.released`): under the
        paper preset, all with `weights: pretrained` (the weights rule fetches them), those
        present with `auto`; none where it converts a stand-in."""
        from sparsegen.config import variant_entries

        mode = self.params["weights"]
        if self.preset != "paper" or mode == "random":
            return []
        files = [self.weights_file(MANIFEST[n].filename)
                 for n in variant_entries(self.params, paper)[variant]["released"]]
        return files if mode == "pretrained" else [f for f in files if Path(f).exists()]

    def release_state(self, paper: str, variant: str) -> dict[str, str]:
        """Manifest name -> sha256 of the file a convert job reads, or `stand-in`."""
        from sparsegen.config import resolve
        from sparsegen.released import release_state

        settings = resolve(self.params, paper, variant, check=False)
        return {n: release_state(settings, n) for n in settings["released"]}

    def convert_inputs(self, paper: str, variant: str) -> dict[str, str | list[str]]:
        return {"released": self.released_files(paper, variant),
                "weights": self.pretrained(self.networks(paper, variant, "train"))}

    def sample_inputs(self, paper: str, variant: str) -> dict[str, str | list[str]]:
        trained = {"kept": self.run(paper, variant, KEPT)} if variant in self.variants(paper) \
            else {}
        return {"checkpoint": self.checkpoint(paper, variant), **trained,
                **self.variant_data(paper, variant), **self.upstream(paper, variant),
                "weights": self.pretrained(self.networks(paper, variant, "evaluate"))}

    def evaluate_inputs(self, paper: str, variant: str) -> dict[str, str | list[str]]:
        return {"samples": self.run(paper, variant, SAMPLES),
                **self.variant_data(paper, variant),  # e.g. FID reads the real set
                "weights": self.pretrained(self.networks(paper, variant, "evaluate"))}

    def figure_inputs(self, paper: str) -> dict[str, str | list[str]]:
        variants, evaluated = self.variants(paper), self.evaluated(paper)
        return {
            "notebook": f"notebooks/{paper}.ipynb",
            "claims": self.claims(paper),  # e.g. the paper's points beside ours
            "checkpoints": [self.run(paper, v, FINAL) for v in variants],
            "logs": [self.run(paper, v, TRAIN_LOG) for v in variants],
            "samples": [self.run(paper, v, SAMPLES) for v in evaluated],
            "metrics": [self.run(paper, v, METRICS) for v in evaluated],
        }

    def table_inputs(self, paper: str) -> dict[str, str | list[str]]:
        return {"claims": self.claims(paper),
                "metrics": [self.run(paper, v, METRICS) for v in self.evaluated(paper)]}

    def tables(self, paper: str) -> list[str]:
        from sparsegen.claims import table_ids

        ids = table_ids(self.claims(paper))
        return [self.table(paper, n, ext) for n in ids for ext in ("md", "csv")]

    # Code each job runs: its fingerprint is part of the job's params (Snakemake reruns the
    # job when it changes) and its files are the DVC stage's code dependencies.

    def code(self, paper: str | None, unit: str) -> list[str]:
        return papers.unit_code(paper, unit)

    def job_settings(self, paper: str, variant: str, unit: str) -> dict[str, Any]:
        """The settings a job of `unit` receives (what its Snakemake params carry): the unit's
        settings, what its networks load (file sha256 or random-init), for `convert` what the
        released weights resolve to, and the fingerprint of the code it runs (a code edit
        changes the params: Snakemake reruns it)."""
        from sparsegen.config import unit_settings

        settings = unit_settings(self.params, paper, variant, unit)
        settings["weights_state"] = self.weights_state(
            paper, variant, "train" if unit == "convert" else unit)
        if unit == "convert":
            settings["released_state"] = self.release_state(paper, variant)
        settings["code"] = self.code_fingerprint(paper, unit)
        return settings

    def code_fingerprint(self, paper: str | None, unit: str) -> str:
        from sparsegen.provenance import code_fingerprint

        return code_fingerprint(self.code(paper, unit))


def flatten(inputs: Mapping[str, str | list[str]]) -> list[str]:
    """All paths of an inputs mapping, in order."""
    out: list[str] = []
    for value in inputs.values():
        out += [value] if isinstance(value, str) else list(value)
    return out
