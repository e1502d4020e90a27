"""The comparability judge: the one place that decides whether a reproduced number compares with
the number a paper printed, and writes down every reason it does not.

Records carry facts (`ResultRecord.facts`, written by each paper's evaluation); claims carry
the paper's evaluation protocol and training recipe (`sparsegen.claims`). The judge compares the
two at table time (`sparsegen.tables.tabulate`, and figures that mark paper-vs-ours points), so
no evaluation job depends on a claims file.

Facts it reads (a key that a record does not state is not judged):
- `preset`: anything but `paper` shortens training and shrinks models and data;
- `data`: role -> {name, real}: synthetic stand-ins never compare;
- `eval`: the evaluation's counts and sizes (n_content, n_style, n_outputs, size; n_samples,
  n_real, inception_size), each against the protocol key of the same name;
- `training`: processes, global_batch, iterations (done), checkpoint (`final`/`best`) and its
  step, networks (name -> weights sha256 or random-init) and `code` (every code fingerprint
  the run trained under: more than one is a mixed lineage); or, for the authors' released
  weights (`released`), their sources: the files (the authors' recipe is the paper's, so no
  recipe check) or a stand-in in the official layout (never comparable);
- the record's `extractor_weights` (random-init feature extractors) and `device` (for
  hardware-bound columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sparsegen.weights import RANDOM_INIT

if TYPE_CHECKING:
    from sparsegen.metrics.records import ResultRecord

# Evaluation facts compared one to one with the protocol: key -> (what the protocol line
# calls it, the reason when ours differs: formatted with ours= and paper=).
EVAL_FACTS = {
    "n_content": ("content images", "{ours} content images (paper: {paper})"),
    "n_style": ("style images", "{ours} style images (paper: {paper})"),
    "n_outputs": ("outputs", "{ours} outputs (paper: {paper})"),
    "size": ("image side", "{ours}x{ours} images (paper: {paper}x{paper})"),
    "n_samples": ("generated images", "FID from {ours} generated images (paper: {paper})"),
    "n_real": ("real images", "FID against {ours} real images (paper: a random {paper})"),
    "inception_size": ("Inception input side",
                       "Inception input {ours}x{ours} (FID protocol: {paper}x{paper})"),
}


def _data_reasons(facts: Mapping[str, Any], protocol: Mapping[str, Any]) -> list[str]:
    synthetic = [f"{role} {d['name']}" for role, d in facts.get("data", {}).items()
                 if not d["real"]]
    if not synthetic:
        return []
    return [f"synthetic data ({', '.join(synthetic)}; paper: {protocol['data']})"]


def _eval_reasons(facts: Mapping[str, Any], protocol: Mapping[str, Any]) -> list[str]:
    measured = facts.get("eval", {})
    return [reason.format(ours=measured[key], paper=protocol[key])
            for key, (_, reason) in EVAL_FACTS.items()
            if key in measured and key in protocol and measured[key] != protocol[key]]


def _training_reasons(training: Mapping[str, Any], recipe: Mapping[str, Any]) -> list[str]:
    reasons = []
    if "global_batch" in recipe and training["global_batch"] != recipe["global_batch"]:
        reasons.append(f"trained with global batch {training['global_batch']} "
                       f"({training['processes']} process(es); paper: "
                       f"{recipe['global_batch']})")
    if "iterations" in recipe and training["iterations"] != recipe["iterations"]:
        reasons.append(f"trained for {training['iterations']} iterations (paper: "
                       f"{recipe['iterations']})")
    if "checkpoint" in recipe and training["checkpoint"] != recipe["checkpoint"]:
        wanted = ("the best of its checkpoints" if recipe["checkpoint"] == "best"
                  else "the final checkpoint")
        reasons.append(f"evaluated on the {training['checkpoint']} checkpoint (step "
                       f"{training['checkpoint_step']}; paper: {wanted})")
    random = sorted(n for n, sha in training.get("networks", {}).items() if sha == RANDOM_INIT)
    if random:
        reasons.append(f"the model was trained with randomly initialised {', '.join(random)} "
                       "(pretrained file not used)")
    code = training.get("code", [])
    if len(code) > 1:
        reasons.append(f"mixed lineage: training resumed across {len(code)} code versions "
                       f"({', '.join(code)})")
    return reasons


def _released_reasons(training: Mapping[str, Any]) -> list[str]:
    stand_ins = sorted(n for n, src in training["released"]["sources"].items()
                       if src["kind"] != "file")
    reasons = []
    if stand_ins:
        reasons.append(f"not the authors' weights: a seeded stand-in in their layout "
                       f"({', '.join(stand_ins)} not used; the paper preset with the fetched "
                       "file converts them)")
    random = sorted(n for n, sha in training.get("networks", {}).items() if sha == RANDOM_INIT)
    if random:
        reasons.append(f"the model runs randomly initialised {', '.join(random)} (pretrained "
                       "file not used)")
    return reasons


def reasons(record: ResultRecord, protocol: Mapping[str, Any], recipe: Mapping[str, Any],
            hardware_bound: str | None = None) -> list[str]:
    """Why `record` does not compare with a number measured under `protocol` by a model trained
    with `recipe`; [] when it does. Each reason names the measured and the paper's value."""
    facts = record.facts
    found = []
    released = "released" in facts.get("training", {})
    if facts.get("preset", "paper") != "paper":
        found.append(f"preset {facts['preset']}: a reduced model" if released else
                     f"preset {facts['preset']}: shortened training of a reduced model")
    found += _data_reasons(facts, protocol)
    found += _eval_reasons(facts, protocol)
    if record.extractor_weights and record.extractor_weights["sha256"] == RANDOM_INIT:
        found.append(f"feature extractor {record.extractor_weights['name']} is randomly "
                     "initialised (pretrained file not used)")
    if released:
        found += _released_reasons(facts["training"])
    elif "training" in facts:
        found += _training_reasons(facts["training"], recipe)
    if hardware_bound:
        found.append(f"{hardware_bound}; measured on {record.device}")
    return list(dict.fromkeys(found))
