"""The paper registry: every registered paper is complete, and nothing else names papers."""

from __future__ import annotations

import importlib
from pathlib import Path

import papermill
import pytest

from sparsegen import config, papers
from sparsegen.config import load_params, load_yaml
from sparsegen.layout import Layout
from sparsegen.provenance import REPO_ROOT


def test_the_schema_papers_enum_is_the_registry() -> None:
    schema = load_yaml(REPO_ROOT / "pipeline" / "schemas" / "params.schema.yaml")
    assert schema["properties"]["papers"]["items"]["enum"] == papers.names()


@pytest.mark.parametrize("name", papers.names())
def test_every_registered_paper_has_its_files(name: str) -> None:
    paper = papers.get(name)
    assert paper.name == name and paper.stages
    assert config.paper_schema_path(name).is_file()
    lay = Layout(load_params())
    assert (REPO_ROOT / lay.claims(name)).is_file()
    notebook = REPO_ROOT / lay.figure_inputs(name)["notebook"]
    assert set(papermill.inspect_notebook(str(notebook))) == {"runs_dir", "figures_dir",
                                                              "claims"}
    importlib.import_module(paper.figures)
    for unit in ("train", "evaluate"):
        paths = papers.unit_code(name, unit)
        assert f"src/{paper.package.replace('.', '/')}" in paths
        assert all((REPO_ROOT / p).exists() for p in paths), paths


def test_unknown_paper_names_the_registry() -> None:
    with pytest.raises(papers.RegistryError, match=r"unknown paper 'vqgan'; registered: "
                                                   r"stya2k, stylenat, dynast, ilat"):
        papers.get("vqgan")


def test_code_of_one_paper_is_not_the_others() -> None:
    stya2k, stylenat = papers.unit_code("stya2k", "train"), papers.unit_code("stylenat", "train")
    assert "src/sparsegen/models/stya2k" in stya2k and "src/sparsegen/models/stya2k" not in stylenat
    lay = Layout(load_params())
    assert lay.code_fingerprint("stya2k", "train") != lay.code_fingerprint("stylenat", "train")


def test_a_code_fingerprint_changes_with_any_file(tmp_path: Path) -> None:
    from sparsegen.provenance import _code_fingerprint, code_fingerprint

    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = code_fingerprint(["pkg"], tmp_path)
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    _code_fingerprint.cache_clear()
    assert code_fingerprint(["pkg"], tmp_path) == before  # __pycache__ does not count
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    _code_fingerprint.cache_clear()
    assert code_fingerprint(["pkg"], tmp_path) != before
    with pytest.raises(FileNotFoundError, match="missing"):
        code_fingerprint(["nope"], tmp_path)


class _TwoStages:
    """A registered paper with two stages, for the `stage`/`uses` checks."""

    name, title, package = "two", "Two stages", "sparsegen.models.two"
    stages = (papers.Stage("tokenizer"), papers.Stage("transformer"))


def test_stage_and_uses_are_checked(monkeypatch) -> None:
    monkeypatch.setattr(papers, "names", lambda: ["two"])
    monkeypatch.setattr(papers, "get", lambda name: _TwoStages)
    params = {"two": {"variants": {
        "vq": {"stage": "tokenizer"},
        "gpt": {"stage": "transformer", "uses": {"tokenizer": "vq"}},
        "bad_stage": {"stage": "decoder"},
        "no_such": {"stage": "transformer", "uses": {"tokenizer": "vq2"}},
        "backwards": {"stage": "tokenizer", "uses": {"tokenizer": "gpt"}},
    }}}
    problems = config._link_problems(params)
    assert problems == [
        "two.variants.bad_stage.stage: 'decoder' is not a stage of two (stages: tokenizer, "
        "transformer)",
        "two.variants.no_such.uses.tokenizer: no variant 'vq2' (defined: vq, gpt, bad_stage, "
        "no_such, backwards)",
        "two.variants.backwards.uses.tokenizer: 'gpt' trains stage 'transformer', which does "
        "not come before 'tokenizer' (stages in order: tokenizer, transformer)",
    ]
