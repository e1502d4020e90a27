"""params.yaml: load, validate against the schema, and resolve one job's settings.

A job's settings are the paper's base block, then the variant's overrides, then the preset's
overrides (the `smoke:` block when `preset: smoke`, then its `variants.<variant>` entry, if any),
plus the global keys and the datasets it reads. The smoke block only changes data, sizes and
lengths, so applying it last shrinks every variant the same way.
Snakemake passes these resolved settings to `python -m sparsegen <step>` through `params:`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from sparsegen.provenance import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "pipeline" / "schemas" / "params.schema.yaml"
PARAMS_PATH = REPO_ROOT / "params.yaml"
GLOBAL_KEYS = ("preset", "weights", "device", "seed", "deterministic", "paths")
PAPERS = ("stya2k", "stylenat")
# Downsampling factor of each VGG layer relative to the image.
VGG_STRIDE = {"relu1_1": 1, "relu2_1": 2, "relu3_1": 4, "relu4_1": 8, "relu5_1": 16}


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


def _key_path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _describe(error: Any) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"{where}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{where}: unknown key(s) {', '.join(map(repr, extra))}{hint}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def _leaf_errors(errors: Iterable[Any]) -> list[Any]:
    """Expand allOf/anyOf wrappers so each message points at the offending key."""
    out = []
    for e in errors:
        if e.context:
            out.extend(_leaf_errors(e.context))
        else:
            out.append(e)
    return out


def validate_params(params: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Check the schema and cross-key rules; raise ParamsError listing every problem."""
    schema = load_yaml(SCHEMA_PATH)
    validator = Draft202012Validator(schema)
    errors = _leaf_errors(validator.iter_errors(params))
    problems = sorted({_describe(e) for e in errors})
    if not problems:
        problems = _cross_key_problems(params)
    if problems:
        raise ParamsError(f"{source} is invalid:\n  - " + "\n  - ".join(problems))
    return params


def _cross_key_problems(params: dict[str, Any]) -> list[str]:
    """Rules a JSON schema cannot express: references between keys, size divisibility.

    A problem shared by several variants is reported once, naming the variants."""
    found: dict[str, list[str]] = {}
    for paper in PAPERS:
        for variant in params[paper]["variants"]:
            s = resolve(params, paper, variant, check=False)
            for message in _settings_problems(params, s):
                found.setdefault(f"{paper} (preset {params['preset']}): {message}", []).append(
                    variant)
    problems = []
    for message, variants in found.items():
        every = len(variants) == len(params[message.split(" ", 1)[0]]["variants"])
        problems.append(message if every else f"{message} [variants: {', '.join(variants)}]")
    return sorted(problems)


def _settings_problems(params: Mapping[str, Any], s: Mapping[str, Any]) -> list[str]:
    problems = []
    for role, name in s["data"].items():
        if name not in params["datasets"]:
            problems.append(f"data.{role}: dataset {name!r} is not defined under datasets "
                            f"(defined: {', '.join(sorted(params['datasets']))})")
    t = s["train"]
    if t["decay_start"] > t["iterations"]:
        problems.append(f"train.decay_start {t['decay_start']} exceeds train.iterations "
                        f"{t['iterations']}")
    return problems + PAPER_PROBLEMS[s["paper"]](s)


def _stylenat_problems(s: Mapping[str, Any]) -> list[str]:
    from sparsegen.models.stylenat.architecture import problems

    return problems(s["model"])


def _stya2k_problems(s: Mapping[str, Any]) -> list[str]:
    problems = []
    t = s["train"]
    if t["crop_size"] > t["load_size"]:
        problems.append(f"train.crop_size {t['crop_size']} exceeds train.load_size "
                        f"{t['load_size']}")
    count_mode = s["model"]["block_mode"] == "count"
    for key, size in (("train.crop_size", t["crop_size"]), ("eval.size", s["eval"]["size"])):
        for layer, block in s["model"]["block_sizes"].items():
            multiple = VGG_STRIDE[layer] * block
            if size % multiple:
                unit = "blocks per side" if count_mode else "pixels per block side"
                problems.append(
                    f"{key} {size}: the {layer} feature side {size / VGG_STRIDE[layer]:g} is not "
                    f"divisible by model.block_sizes.{layer} = {block} ({unit}); use a multiple "
                    f"of {multiple}")
    return problems


PAPER_PROBLEMS = {"stya2k": _stya2k_problems, "stylenat": _stylenat_problems}


def load_params(path: str | Path = PARAMS_PATH, overrides: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """Read and validate params.yaml (optionally with top-level overrides, e.g. preset)."""
    params = load_yaml(path)
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    if overrides:
        params = deep_merge(params, overrides)
    return validate_params(params, source=str(path))


def resolve(params: Mapping[str, Any], paper: str, variant: str, check: bool = True
            ) -> dict[str, Any]:
    """Settings of one (paper, variant) job under the active preset: base, preset, variant."""
    if paper not in params:
        raise ParamsError(f"unknown paper {paper!r}; params.yaml defines: "
                          f"{', '.join(p for p in PAPERS if p in params)}")
    block = params[paper]
    if variant not in block["variants"]:
        raise ParamsError(f"{paper}.variants: no variant {variant!r} (defined: "
                          f"{', '.join(block['variants'])})")
    base = {k: v for k, v in block.items() if k not in ("variants", "smoke")}
    settings = deep_merge(base, block["variants"][variant])
    if params["preset"] == "smoke":
        smoke = block.get("smoke", {})
        settings = deep_merge(settings, {k: v for k, v in smoke.items() if k != "variants"})
        settings = deep_merge(settings, smoke.get("variants", {}).get(variant, {}))
    settings.update({k: copy.deepcopy(params[k]) for k in GLOBAL_KEYS})
    settings.update(paper=paper, variant=variant)
    if check:
        settings["datasets"] = {
            role: {"name": name, **copy.deepcopy(params["datasets"][name])}
            for role, name in settings["data"].items()
        }
    return settings


# Sections of a paper block each pipeline unit reads (besides the variant's own overrides for
# `train`). One definition serves the Snakemake params (what a job receives) and the DVC
# stage params (what invalidates a stage), so the two cannot disagree.
UNIT_SECTIONS = {
    "train": ("experiment", "data", "model", "loss", "train"),
    "evaluate": ("experiment", "data", "eval"),
}
UNIT_GLOBALS = {
    "train": ("preset", "weights", "device", "seed", "deterministic"),
    "evaluate": ("preset", "weights", "device", "seed", "deterministic"),
}


def unit_settings(params: Mapping[str, Any], paper: str, variant: str, unit: str
                  ) -> dict[str, Any]:
    """The settings a `unit` job of (paper, variant) receives: only what that unit reads."""
    full = resolve(params, paper, variant)
    keep = (*UNIT_SECTIONS[unit], *UNIT_GLOBALS[unit], "paths", "datasets", "paper", "variant")
    return {k: full[k] for k in keep if k in full}


def unit_param_keys(params: Mapping[str, Any], paper: str, variant: str, unit: str
                    ) -> list[str]:
    """Dotted params.yaml keys that `unit` of (paper, variant) reads under the active preset."""
    keys = list(UNIT_GLOBALS[unit])
    keys += [f"{paper}.{section}" for section in UNIT_SECTIONS[unit]]
    if unit == "train":
        keys.append(f"{paper}.variants.{variant}")
    if params["preset"] == "smoke":
        smoke = params[paper].get("smoke", {})
        keys += [f"{paper}.smoke.{section}" for section in UNIT_SECTIONS[unit] if section in smoke]
        own = smoke.get("variants", {}).get(variant, {})
        keys += [f"{paper}.smoke.variants.{variant}.{section}" for section in UNIT_SECTIONS[unit]
                 if section in own]
    return keys


def datasets_in_use(params: Mapping[str, Any]) -> list[str]:
    """Prepared datasets the enabled papers read under the active preset, sorted."""
    names = set()
    for paper in params["papers"]:
        for variant in params[paper]["variants"]:
            names.update(resolve(params, paper, variant, check=False)["data"].values())
    return sorted(names)
