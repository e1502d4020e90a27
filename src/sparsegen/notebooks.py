"""Notebook execution with papermill and self-contained, offline HTML export."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import jinja2

from sparsegen.io import atomic_path, write_text

# The lab template with every CDN script removed (require.js, MathJax, Mermaid, widgets); the
# figure notebooks use no LaTeX, diagrams or widgets, and images are inlined as base64.
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
_EXTERNAL = re.compile(
    r"<(?:script|link|img)\b[^>]*?\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//[^\"'\s>]*",
    re.IGNORECASE,
)


def external_references(html: str) -> list[str]:
    """script/link/img tags in `html` whose src or href points off the page (http, https, //)."""
    return _EXTERNAL.findall(html)


def html_offline(notebook: Path, title: str, hide_input: bool = True) -> str:
    """Render an executed notebook as HTML that needs no network; refuses remote images."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="offline.html.j2",
        embed_images=True,
        exclude_input=hide_input,
        exclude_input_prompt=hide_input,
        exclude_output_prompt=hide_input,
    )
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    found = external_references(html)
    if found:
        raise RuntimeError(f"HTML export of {title!r} still references external files: "
                           f"{found[:3]}")
    return html


def execute(notebook: Path, out_ipynb: Path, out_html: Path, parameters: dict,
            cwd: Path) -> None:
    """Execute `notebook` with papermill into `out_ipynb`, then export offline HTML to `out_html`.

    `parameters` (paths only, by convention) are injected after the cell tagged `parameters`.
    Both outputs are written atomically; a failing notebook leaves neither (papermill's error
    names the failing cell)."""
    import papermill

    notebook, out_ipynb, out_html = Path(notebook), Path(out_ipynb), Path(out_html)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: notebook not found")
    params = {k: str(v) if isinstance(v, Path) else v for k, v in parameters.items()}
    with atomic_path(out_ipynb) as tmp, warnings.catch_warnings():
        # The temporary name does not end in .ipynb; papermill warns about that only.
        warnings.filterwarnings("ignore", message="The specified file .* does not end in")
        papermill.execute_notebook(
            str(notebook), str(tmp), parameters=params, cwd=str(cwd), kernel_name="python3",
            progress_bar=False, log_output=False,
        )
        html = html_offline(tmp, title=out_html.stem)
    write_text(out_html, html)
