"""results/index.html: one offline page linking every table, figure, notebook and benchmark."""

from __future__ import annotations

import csv
import html
import os
from pathlib import Path
from urllib.parse import quote

import mistune

from sparsegen.io import write_text

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; }
.meta { color: #555; }
.banner { background: #fff3cd; border: 1px solid #e0b000; padding: 0.8em 1em; margin: 1em 0; }
section.item { border-top: 1px solid #ddd; margin-top: 1.5em; padding-top: 0.5em; }
section.item h1 { font-size: 1.1em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
.thumbs { display: flex; flex-wrap: wrap; gap: 1em; }
.thumbs figure { margin: 0; width: 260px; }
.thumbs img { width: 260px; border: 1px solid #ccc; }
.thumbs figcaption { font-size: 0.8em; word-break: break-all; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""
_MARKDOWN = mistune.create_markdown(escape=False, plugins=["table"])


def _href(path: Path, root: Path) -> str:
    return quote(Path(os.path.relpath(path, root)).as_posix())


def _link(path: Path, root: Path) -> str:
    rel = Path(os.path.relpath(path, root)).as_posix()
    return f'<a href="{_href(path, root)}">{html.escape(rel)}</a>'


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _csv_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>(empty)</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _non_comparable(rows: list[dict[str, str]]) -> bool:
    return any(str(r.get("comparable", "")).strip().lower() == "false" for r in rows)


def build_index(results_dir: Path, preset: str, commit: str, notes: dict | None = None) -> Path:
    """Write results_dir/index.html (offline, relative links) and return its path.

    Lists results_dir/tables/*.md (rendered inline, with the .csv beside it),
    figures/**/*.png (thumbnails), notebooks/*.ipynb and *.html, and bench/*.csv (rendered
    inline). A banner appears when a table or benchmark CSV has a cell with comparable = False.
    `notes` adds "heading: text" lines under the header."""
    root = Path(results_dir)
    tables = sorted((root / "tables").glob("*.md"))
    figures = sorted((root / "figures").rglob("*.png"))
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    benches = sorted((root / "bench").glob("*.csv"))

    parts: list[str] = []
    non_comparable: list[str] = []
    table_html = []
    for md in tables:
        csv_path = md.with_suffix(".csv")
        links = [_link(md, root)]
        if csv_path.is_file():
            links.append(_link(csv_path, root))
            if _non_comparable(_read_csv(csv_path)):
                non_comparable.append(md.stem)
        table_html.append(f'<section class="item" id="{html.escape(md.stem)}">'
                          f'<p>{" · ".join(links)}</p><div class="scroll">'
                          f"{_MARKDOWN(md.read_text())}</div></section>")
    bench_html = []
    for path in benches:
        rows = _read_csv(path)
        if _non_comparable(rows):
            non_comparable.append(f"bench/{path.name}")
        bench_html.append(f'<section class="item"><h1>{html.escape(path.stem)}</h1>'
                          f"<p>{_link(path, root)}</p>{_csv_table(rows)}</section>")

    parts.append(f"<h1>sparsegen results</h1><p class=\"meta\">Preset <code>{html.escape(preset)}"
                 f"</code> · commit <code>{html.escape(commit)}</code></p>")
    if non_comparable:
        parts.append('<div class="banner"><strong>Some numbers are not comparable with the '
                     "papers</strong> (other data, sizes, sample counts, feature-extractor weights "
                     "or hardware; each table names its reasons): "
                     + ", ".join(html.escape(n) for n in non_comparable) + ".</div>")
    if notes:
        parts.append("<dl>" + "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}"
                                      "</dd>" for k, v in notes.items()) + "</dl>")
    parts.append("<h2>Tables</h2>" + ("".join(table_html) or "<p>none</p>"))
    thumbs = "".join(f'<figure><a href="{_href(p, root)}"><img src="{_href(p, root)}" '
                     f'alt="{html.escape(p.stem)}" loading="lazy"></a><figcaption>'
                     f"{html.escape(Path(os.path.relpath(p, root)).as_posix())}</figcaption>"
                     "</figure>" for p in figures)
    parts.append(f'<h2>Figures</h2><div class="thumbs">{thumbs}</div>' if figures
                 else "<h2>Figures</h2><p>none</p>")
    items = []
    for nb in notebooks:
        page = nb.with_suffix(".html")
        links = [_link(page, root)] if page.is_file() else []
        items.append(f"<li>{html.escape(nb.stem)}: {' · '.join([*links, _link(nb, root)])}</li>")
    parts.append("<h2>Notebooks</h2>" + (f"<ul>{''.join(items)}</ul>" if items else "<p>none</p>"))
    parts.append("<h2>Benchmarks</h2>" + ("".join(bench_html) or "<p>none</p>"))

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>sparsegen results ({html.escape(preset)})</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    out = root / "index.html"
    write_text(out, page)
    return out
