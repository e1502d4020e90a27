"""results/index.html: every table, figure, notebook and benchmark linked, offline."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from sparsegen.io import write_image, write_text
from sparsegen.provenance import REPO_ROOT
from sparsegen.report import build_index
from sparsegen.tables import tabulate

CLAIMS = REPO_ROOT / "pipeline" / "claims" / "stya2k.yaml"


class Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        self.refs += [(tag, k, v) for k, v in attrs if k in ("href", "src") and v]

    def handle_data(self, data):
        self.text.append(data)


def results_tree(root: Path, write_metrics, comparable: bool) -> Path:
    results = root / "results"
    tabulate(CLAIMS, write_metrics(root / "runs", comparable=comparable), results / "tables",
             "smoke", "c0ffee")
    figure = np.zeros((8, 8, 3), dtype=np.uint8)
    write_image(results / "figures" / "stya2k" / "fig 6 comparison.png", figure)
    write_image(results / "figures" / "stya2k" / "training_curves.png", figure)
    write_text(results / "notebooks" / "stya2k.ipynb", "{}")
    write_text(results / "notebooks" / "stya2k.html", "<html></html>")
    write_text(results / "bench" / "stya2k.csv",
               "method,size,seconds,comparable\na2k,128,0.25,True\nall_to_all,128,0.5,True\n")
    return results


def parse(path: Path) -> Refs:
    parser = Refs()
    parser.feed(path.read_text())
    return parser


def test_index_links_every_output_and_nothing_external(tmp_path, write_metrics):
    results = results_tree(tmp_path, write_metrics, comparable=True)
    index = build_index(results, "smoke", "c0ffee", notes={"data": "synthetic stand-ins"})
    assert index == results / "index.html"
    page = parse(index)
    targets = set()
    for _tag, _attr, ref in page.refs:
        assert "://" not in ref and not ref.startswith(("/", "//")), ref
        target = results / unquote(ref)
        assert target.is_file(), ref
        targets.add(target.relative_to(results).as_posix())
    expected = {p.relative_to(results).as_posix() for p in results.rglob("*")
                if p.is_file() and p.name != "index.html"}
    assert targets == expected  # every file is linked
    text = " ".join(page.text)
    assert "smoke" in text and "c0ffee" in text and "synthetic stand-ins" in text
    # 3 claims tables and 1 benchmark rendered inline.
    assert page.tables == 4
    assert "w/o Step 1 of PA" in text and "all_to_all" in text
    # Table 1 always has a non-comparable cell (inference time on other hardware); 2 and 4 not.
    banner = index_banner(index)
    assert "not comparable" in banner and "stya2k_table1" in banner
    assert "stya2k_table2" not in banner and "stya2k_table4" not in banner


def test_banner_only_when_something_is_not_comparable(tmp_path, write_metrics):
    results = results_tree(tmp_path, write_metrics, comparable=False)
    for name in ("stya2k_table1", "stya2k_table2", "stya2k_table4"):
        assert name in index_banner(build_index(results, "smoke", "c0ffee"))
    for name in ("stya2k_table1", "stya2k_table2", "stya2k_table4"):
        (results / "tables" / f"{name}.md").unlink()
        (results / "tables" / f"{name}.csv").unlink()
    assert index_banner(build_index(results, "smoke", "c0ffee")) == ""
    write_text(results / "bench" / "stya2k.csv", "method,seconds,comparable\na2k,0.2,False\n")
    assert "bench/stya2k.csv" in index_banner(build_index(results, "smoke", "c0ffee"))


def index_banner(path: Path) -> str:
    html = path.read_text()
    start = html.find('<div class="banner">')
    return "" if start < 0 else html[start:html.index("</div>", start)]
