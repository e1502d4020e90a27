"""Notebook execution (papermill) and the offline HTML export; the StyA2K notebook's interface."""

from __future__ import annotations

import ast
import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import papermill
import pytest

from sparsegen.figures import stya2k as stya2k_figures
from sparsegen.notebooks import execute, external_references, html_offline
from sparsegen.provenance import REPO_ROOT

STYA2K_NOTEBOOK = REPO_ROOT / "notebooks" / "stya2k.ipynb"


class TagSources(HTMLParser):
    """Collect src/href of every script, link and img tag."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "link", "img"):
            self.refs += [(tag, v) for k, v in attrs if k in ("src", "href") and v is not None]


def tiny_notebook(path: Path) -> None:
    params = nbformat.v4.new_code_cell('out_dir = "unset"')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Tiny\n\nSee [the docs](https://example.org/docs)."),
        params,
        nbformat.v4.new_code_cell(
            "%matplotlib inline\n"
            "from pathlib import Path\n"
            "from matplotlib.figure import Figure\n"
            "fig = Figure(figsize=(2, 2))\n"
            "fig.subplots().plot([0, 1], [1, 0])\n"
            "Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
            "(Path(out_dir) / 'marker.txt').write_text('SECRET_SOURCE_LINE')\n"
            "print('wrote', Path(out_dir).name)\n"
            "fig"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def test_execute_writes_notebook_and_offline_html(tmp_path):
    tiny_notebook(tmp_path / "tiny.ipynb")
    out_ipynb, out_html = tmp_path / "out" / "tiny.ipynb", tmp_path / "out" / "tiny.html"
    execute(tmp_path / "tiny.ipynb", out_ipynb, out_html,
            {"out_dir": tmp_path / "made"}, cwd=tmp_path)

    assert (tmp_path / "made" / "marker.txt").read_text() == "SECRET_SOURCE_LINE"
    nb = nbformat.read(out_ipynb, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and str(tmp_path / "made") in injected[0].source
    assert any("wrote made" in o.get("text", "") for o in nb.cells[-1].outputs)
    assert not list(out_ipynb.parent.glob(".*.tmp"))  # no temporary left behind

    html = out_html.read_text()
    parser = TagSources()
    parser.feed(html)
    assert parser.refs == [] or all(not re.match(r"(https?:)?//", v) for _, v in parser.refs)
    assert "<title>tiny</title>" in html
    assert "require.min.js" not in html and "mathjax" not in html.lower()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"', html)
    assert len(images) == 1
    assert base64.b64decode(images[0]).startswith(b"\x89PNG")
    assert "SECRET_SOURCE_LINE" not in html  # inputs hidden
    assert "wrote made" in html
    assert 'href="https://example.org/docs"' in html  # ordinary links stay


def test_remote_image_in_markdown_is_refused(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("![logo](https://example.org/logo.png)")])
    nbformat.write(nb, tmp_path / "remote.ipynb")
    with pytest.raises(RuntimeError, match=r"'remote' still references external files"):
        html_offline(tmp_path / "remote.ipynb", title="remote")


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.ipynb: notebook not found"):
        execute(tmp_path / "nope.ipynb", tmp_path / "o.ipynb", tmp_path / "o.html", {}, tmp_path)


@pytest.mark.parametrize(("html", "found"), [
    ('<script src="https://cdn.x/require.js"></script>', 1),
    ("<link rel=stylesheet href=http://x.org/a.css>", 1),
    ('<img alt="a" src="//x.org/a.png">', 1),
    ('<IMG SRC = "HTTPS://X.ORG/A.PNG">', 1),
    ('<script>var u = "https://x.org";</script>', 0),
    ('<a href="https://x.org">x</a><img src="data:image/png;base64,AAAA">', 0),
    ('<link rel="stylesheet" href="style.css"><img src="fig/a.png">', 0),
])
def test_external_references(html, found):
    assert len(external_references(html)) == found


def test_stya2k_notebook_takes_paths_and_calls_existing_figures():
    params = papermill.inspect_notebook(str(STYA2K_NOTEBOOK))
    # The figures rule passes exactly these (pipeline/rules/figures.smk).
    assert set(params) == {"runs_dir", "figures_dir", "claims"}
    assert all(p["inferred_type_name"] == "str" for p in params.values())
    nb = nbformat.read(STYA2K_NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    called = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.splitlines()
                             if not line.startswith("%"))  # IPython magics
            for node in ast.walk(ast.parse(code)):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "figures"):
                    called.add(node.attr)
    assert called == {"figure_attention", "figure_comparison", "figure_ablation",
                      "figure_interpolation", "figure_a2k_vs_all_to_all",
                      "figure_training_curves", "figure_showcase"}
    assert all(callable(getattr(stya2k_figures, name)) for name in called)
