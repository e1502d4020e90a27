"""params.yaml: load, validate against the schema, and resolve one job's settings.

A job's settings are the paper's base block, then the variant's overrides, then the preset's
overrides (the `smoke:` block when `preset: smoke`, then its `variants.<variant>` entry, if any),
plus the global keys and the datasets it reads. The smoke block only changes data, sizes and
lengths, so applying it last shrinks every variant the same way.
Snakemake passes these resolved settings to `python -m sparsegen <step>` through `params:`.

Which papers exist is the registry's business (`sparsegen.papers`): the schema of each paper's
block is pipeline/schemas/papers/<paper>.schema.yaml, its cross-key checks are the paper's
`problems`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from sparsegen import papers
from sparsegen.provenance import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "pipeline" / "schemas"
SCHEMA_PATH = SCHEMA_DIR / "params.schema.yaml"
PARAMS_PATH = REPO_ROOT / "params.yaml"
GLOBAL_KEYS = ("preset", "weights", "device", "seed", "deterministic", "paths")
# The smoke preset's showcase: a paper's headline variant trained longer at the smoke sizes
# (`<paper>.smoke.showcase`), a run of its own that no paper table shows.
SHOWCASE = "showcase"
# Keys of a variant entry that link it to other variants (or to the authors' released weights,
# `released`) rather than override settings.
LINK_KEYS = ("stage", "uses", "released", "checkpoint_of")


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the key path and what is allowed."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None


def paper_schema_path(paper: str) -> Path:
    return SCHEMA_DIR / "papers" / f"{paper}.schema.yaml"


@cache
def _validators() -> tuple[Draft202012Validator, dict[str, Draft202012Validator]]:
    """The params.yaml validator (every registered paper's block schema under its name) and
    one validator per paper block."""
    schema = load_yaml(SCHEMA_PATH)
    schema["$id"] = SCHEMA_PATH.as_uri()
    resources = [(schema["$id"], Resource.from_contents(schema))]
    blocks = {}
    for paper in papers.names():
        path = paper_schema_path(paper)
        if not path.is_file():
            raise ParamsError(f"{path}: schema of the registered paper {paper!r} not found")
        block = load_yaml(path)
        block["$id"] = path.as_uri()
        resources.append((block["$id"], Resource.from_contents(block)))
        schema["properties"][paper] = {"$ref": block["$id"]}
        schema["required"] = [*schema["required"], paper]
        blocks[paper] = block
    registry = Registry().with_resources(resources)
    return (Draft202012Validator(schema, registry=registry),
            {p: Draft202012Validator(b, registry=registry) for p, b in blocks.items()})


def _key_path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _describe(error: Any, prefix: str = "") -> str:
    where = prefix + _key_path(error.absolute_path)
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"{where}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{where}: unknown key(s) {', '.join(map(repr, extra))}{hint}"
    if error.validator == "type":
        kinds = error.validator_value if isinstance(error.validator_value, list) else [
            error.validator_value]
        names = [_TYPE_NAMES.get(k, k) for k in kinds]
        expected = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        return f"{where}: expected {expected}, got {error.instance!r}"
    if error.validator == "required":
        missing = re.match(r"'(.+)' is a required property", error.message)
        if missing:
            return f"{_key_path([*error.absolute_path, missing.group(1)])}: required key is " \
                   "missing"
    return f"{where}: {error.message}"


_TYPE_NAMES = {"number": "a number", "integer": "an integer", "string": "a string",
               "boolean": "a boolean", "object": "a mapping", "array": "a list", "null": "null"}


def _leaf_errors(errors: Iterable[Any]) -> list[Any]:
    """Expand allOf/anyOf wrappers so each message points at the offending key."""
    out = []
    for e in errors:
        if e.context:
            out.extend(_leaf_errors(e.context))
        else:
            out.append(e)
    return out


def schema_problems(validator: Draft202012Validator, instance: Any, prefix: str = ""
                    ) -> list[str]:
    """Every schema violation of `instance`, one message each naming the key path."""
    return sorted({_describe(e, prefix) for e in _leaf_errors(validator.iter_errors(instance))})


def validate_params(params: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Check the schema and cross-key rules; raise ParamsError listing every problem."""
    problems = schema_problems(_validators()[0], params)
    if not problems:
        problems = _cross_key_problems(params)
    if problems:
        raise ParamsError(f"{source} is invalid:\n  - " + "\n  - ".join(problems))
    return params


def validate_settings(settings: Any, source: str = "--settings") -> dict[str, Any]:
    """Check a job's resolved settings (what a rule passes on the command line) against the
    schema of its paper's block and the global keys; raise ParamsError naming each key."""
    if not isinstance(settings, dict):
        raise ParamsError(f"{source}: expected a JSON object")
    missing = [k for k in (*GLOBAL_KEYS, "paper", "variant") if k not in settings]
    if missing:
        raise ParamsError(f"{source}: missing key(s) {', '.join(missing)} (print a job's "
                          "settings with `python -m sparsegen settings <paper> <variant>`)")
    try:
        papers.get(settings["paper"])
    except papers.RegistryError as e:
        raise ParamsError(f"{source}: paper: {e}") from None
    params_validator, blocks = _validators()
    top = params_validator.schema["properties"]
    block = blocks[settings["paper"]]
    problems = []
    for key in GLOBAL_KEYS:
        problems += schema_problems(params_validator.evolve(schema=top[key]), settings[key],
                                     prefix=f"{key}.")
    for section, schema in block.schema["properties"].items():
        if section in settings and section not in ("variants", "smoke"):
            sub = block.evolve(schema=schema)
            problems += schema_problems(sub, settings[section], prefix=f"{section}.")
    problems = [p.replace(".: ", ": ").replace(".<top level>", "") for p in problems]
    if problems:
        raise ParamsError(f"{source} is invalid:\n  - " + "\n  - ".join(sorted(problems)))
    return settings


def _cross_key_problems(params: dict[str, Any]) -> list[str]:
    """Rules a JSON schema cannot express: references between keys, size divisibility.

    A problem shared by several variants is reported once, naming the variants."""
    problems = _link_problems(params)
    if problems:
        return problems
    found: dict[tuple[str, str], list[str]] = {}
    for paper in papers.names():
        for variant in variant_entries(params, paper):
            s = resolve(params, paper, variant, check=False)
            for message in _settings_problems(params, s):
                found.setdefault((paper, message), []).append(variant)
    for (paper, message), variants in found.items():
        every = len(variants) == len(variant_entries(params, paper))
        text = f"{paper} (preset {params['preset']}): {message}"
        problems.append(text if every else f"{text} [variants: {', '.join(variants)}]")
    return sorted(problems)


def _link_problems(params: Mapping[str, Any]) -> list[str]:
    """`stage` names a stage of the paper; `uses` names variants of an earlier stage."""
    problems = []
    for name in papers.names():
        paper = papers.get(name)
        order = [s.name for s in paper.stages]
        variants = params[name]["variants"]
        showcase = params[name].get("smoke", {}).get(SHOWCASE)
        if showcase and showcase["of"] not in variants:
            problems.append(f"{name}.smoke.{SHOWCASE}.of: no variant {showcase['of']!r} "
                            f"(defined: {', '.join(variants)})")
        if showcase and variants.get(showcase["of"], {}).get("released"):
            problems.append(f"{name}.smoke.{SHOWCASE}.of: {showcase['of']!r} is a released "
                            "variant (nothing to train longer)")
        for variant, entry in variants.items():
            key = f"{name}.variants.{variant}"
            problems += _released_problems(key, entry)
            problems += _checkpoint_of_problems(key, entry, variants)
            try:
                stage = papers.stage_of(paper, entry).name
            except papers.RegistryError:
                problems.append(f"{key}.stage: {entry['stage']!r} is not a stage of {name} "
                                f"(stages: {', '.join(order)})")
                continue
            for role, upstream in entry.get("uses", {}).items():
                if upstream not in variants:
                    problems.append(f"{key}.uses.{role}: no variant {upstream!r} (defined: "
                                    f"{', '.join(variants)})")
                    continue
                up_stage = variants[upstream].get("stage", order[0])
                if up_stage not in order or order.index(up_stage) >= order.index(stage):
                    problems.append(f"{key}.uses.{role}: {upstream!r} trains stage "
                                    f"{up_stage!r}, which does not come before {stage!r} "
                                    f"(stages in order: {', '.join(order)})")
    return problems


def _released_problems(key: str, entry: Mapping[str, Any]) -> list[str]:
    """A released variant names manifest entries and trains nothing (no `uses`; its `stage`
    names the stage whose samples it writes, e.g. a released transformer with its tokenizers)."""
    from sparsegen.weights import MANIFEST

    if "released" not in entry:
        return []
    problems = [f"{key}.released: {n!r} is not in the weights manifest (sparsegen.weights; "
                f"has: {', '.join(sorted(MANIFEST))})" for n in entry["released"]
                if n not in MANIFEST]
    problems += [f"{key}.{link}: a released variant is not trained (remove `{link}`)"
                 for link in ("uses",) if link in entry]
    return problems


def _checkpoint_of_problems(key: str, entry: Mapping[str, Any],
                            variants: Mapping[str, Any]) -> list[str]:
    """A sample-only variant (`checkpoint_of`) samples another trained variant's checkpoint
    with its own evaluation settings: that variant exists, is trained, and feeds the same
    upstream checkpoints (`uses`)."""
    of = entry.get("checkpoint_of")
    if of is None:
        return []
    if of not in variants:
        return [f"{key}.checkpoint_of: no variant {of!r} (defined: {', '.join(variants)})"]
    source = variants[of]
    if source.get("released") or source.get("checkpoint_of") or "released" in entry:
        return [f"{key}.checkpoint_of: {of!r} is not a trained variant (it is sample-only), or "
                f"this variant is also `released`"]
    if entry.get("uses", {}) != source.get("uses", {}) \
            or entry.get("stage") != source.get("stage"):
        return [f"{key}: `stage` and `uses` must equal those of {of!r}, whose checkpoint it "
                f"samples ({entry.get('stage')!r}, {entry.get('uses', {})} vs "
                f"{source.get('stage')!r}, {source.get('uses', {})})"]
    return []


def is_released(params: Mapping[str, Any], paper: str, variant: str) -> bool:
    """Whether (paper, variant) samples the authors' released weights instead of training."""
    return bool(variant_entries(params, paper)[variant].get("released"))


def _settings_problems(params: Mapping[str, Any], s: Mapping[str, Any]) -> list[str]:
    problems = []
    for role, name in s.get("data", {}).items():
        if name is not None and name not in params["datasets"]:
            problems.append(f"data.{role}: dataset {name!r} is not defined under datasets "
                            f"(defined: {', '.join(sorted(params['datasets']))})")
    t = s.get("train", {})
    if t.get("decay_start") is not None and t.get("iterations") is not None \
            and t["decay_start"] > t["iterations"]:
        problems.append(f"train.decay_start {t['decay_start']} exceeds train.iterations "
                        f"{t['iterations']}")
    return problems + papers.get(s["paper"]).problems(s)


def load_params(path: str | Path = PARAMS_PATH, overrides: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """Read and validate params.yaml (optionally with top-level overrides, e.g. preset)."""
    params = load_yaml(path)
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    if overrides:
        params = deep_merge(params, overrides)
    return validate_params(params, source=str(path))


def variant_entries(params: Mapping[str, Any], paper: str) -> dict[str, dict[str, Any]]:
    """The variants of `paper` under the active preset: its `variants`, plus under the smoke
    preset the showcase, whose entry is the variant it shows (`of`)."""
    block = params[paper]
    entries = dict(block["variants"])
    showcase = block.get("smoke", {}).get("showcase")
    if params["preset"] == "smoke" and showcase:
        entries[SHOWCASE] = entries[showcase["of"]]
    return entries


def resolve(params: Mapping[str, Any], paper: str, variant: str, check: bool = True
            ) -> dict[str, Any]:
    """Settings of one (paper, variant) job under the active preset: base, variant, preset.

    `stage` is the variant's stage; `uses` maps each role to the upstream variant and the
    final.pt its training reads. With `check`, `datasets` describes each dataset it reads
    (its params entry, name and whether it is real or synthetic; its folder is
    `layout.dataset_dir`)."""
    if paper not in params:
        raise ParamsError(f"unknown paper {paper!r}; params.yaml defines: "
                          f"{', '.join(p for p in papers.names() if p in params)}")
    block = params[paper]
    entries = variant_entries(params, paper)
    if variant not in entries:
        raise ParamsError(f"{paper}.variants: no variant {variant!r} (defined: "
                          f"{', '.join(entries)})")
    entry = entries[variant]
    base = {k: v for k, v in block.items() if k not in ("variants", "smoke")}
    settings = deep_merge(base, {k: v for k, v in entry.items() if k not in LINK_KEYS})
    if params["preset"] == "smoke":
        smoke = block.get("smoke", {})
        settings = deep_merge(settings, {k: v for k, v in smoke.items()
                                         if k not in ("variants", SHOWCASE)})
        shown = smoke[SHOWCASE]["of"] if variant == SHOWCASE else variant
        settings = deep_merge(settings, smoke.get("variants", {}).get(shown, {}))
        if variant == SHOWCASE:
            settings = deep_merge(settings, {k: v for k, v in smoke[SHOWCASE].items()
                                             if k != "of"})
    settings.update({k: copy.deepcopy(params[k]) for k in GLOBAL_KEYS})
    settings.update(paper=paper, variant=variant,
                    stage=entry.get("stage", papers.get(paper).stages[0].name))
    if entry.get("released"):
        settings["released"] = list(entry["released"])
    if entry.get("checkpoint_of"):
        settings["checkpoint_of"] = entry["checkpoint_of"]
    if entry.get("uses"):
        from sparsegen.layout import Layout

        lay = Layout(params)
        settings["uses"] = {role: {"variant": up, "checkpoint": lay.run(paper, up, "final.pt")}
                            for role, up in entry["uses"].items()}
    if check:
        from sparsegen.data.sources import is_real

        settings["datasets"] = {
            role: {"name": name, **copy.deepcopy(params["datasets"][name]),
                   "real": is_real(params["datasets"][name]["source"])}
            for role, name in settings.get("data", {}).items() if name is not None
        }
    return settings


# Sections of a paper block each pipeline unit reads (besides the variant's own overrides for
# `train`). One definition serves the Snakemake params (what a job receives) and the DVC
# stage params (what invalidates a stage), so the two cannot disagree.
UNIT_SECTIONS = {
    "train": ("experiment", "data", "model", "loss", "train"),
    "convert": ("experiment", "data", "model"),  # a released variant's stand-in for `train`
    "evaluate": ("experiment", "data", "eval"),
}
UNIT_GLOBALS = ("preset", "weights", "device", "seed", "deterministic")


def unit_settings(params: Mapping[str, Any], paper: str, variant: str, unit: str
                  ) -> dict[str, Any]:
    """The settings a `unit` job of (paper, variant) receives: only what that unit reads."""
    full = resolve(params, paper, variant)
    keep = (*UNIT_SECTIONS[unit], *UNIT_GLOBALS, "paths", "datasets", "paper", "variant",
            "stage", "uses", "released", "checkpoint_of")
    return {k: full[k] for k in keep if k in full}


def unit_param_keys(params: Mapping[str, Any], paper: str, variant: str, unit: str
                    ) -> list[str]:
    """Dotted params.yaml keys that `unit` of (paper, variant) reads under the active preset.

    A train unit also reads the train keys of every variant it `uses` (their checkpoints are
    its inputs), so changing an upstream variant stales its consumers in DVC at once."""
    block = params[paper]
    smoke = block.get("smoke", {}) if params["preset"] == "smoke" else {}
    shown = smoke[SHOWCASE]["of"] if variant == SHOWCASE else variant
    keys = list(UNIT_GLOBALS)
    keys += [f"{paper}.{section}" for section in UNIT_SECTIONS[unit] if section in block]
    if unit in ("train", "convert"):
        keys.append(f"{paper}.variants.{shown}")
    if smoke:
        keys += [f"{paper}.smoke.{section}" for section in UNIT_SECTIONS[unit] if section in smoke]
        own = smoke.get("variants", {}).get(shown, {})
        keys += [f"{paper}.smoke.variants.{shown}.{section}" for section in UNIT_SECTIONS[unit]
                 if section in own]
    if variant == SHOWCASE:
        keys.append(f"{paper}.smoke.{SHOWCASE}")
    entry = variant_entries(params, paper)[variant]
    for upstream in entry.get("uses", {}).values():
        keys += unit_param_keys(params, paper, upstream, "train")
    if "checkpoint_of" in entry:  # it samples that variant's checkpoint
        keys += unit_param_keys(params, paper, entry["checkpoint_of"], "train")
    return list(dict.fromkeys(keys))


def datasets_in_use(params: Mapping[str, Any]) -> list[str]:
    """Prepared datasets the enabled papers read under the active preset, sorted."""
    names = set()
    for paper in params["papers"]:
        for variant in variant_entries(params, paper):
            data = resolve(params, paper, variant, check=False).get("data", {})
            names.update(name for name in data.values() if name is not None)
    return sorted(names)
