"""Paper-vs-reproduced tables: each claims table beside the records that reproduce it.

`tabulate` writes every table of a claims file (`sparsegen.claims`) as markdown (for readers)
and long-format CSV (one row per cell): the paper value, the reproduced value, the record's
fingerprint and the judge's verdict (`sparsegen.judge`) with every reason. A record made at
another commit than the table's gets a warning line naming the variants and commits.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparsegen import judge
from sparsegen.claims import CellSource, Claims, Column, Row, Table, load_claims
from sparsegen.io import write_text
from sparsegen.provenance import REPO_ROOT, stable_hash

if TYPE_CHECKING:
    from sparsegen.metrics.records import ResultRecord

CSV_FIELDS = (
    "table", "row", "row_label", "variant", "column", "column_label", "metric",
    "higher_is_better", "paper_value", "paper_mark", "reproduced_value", "n_samples",
    "fingerprint", "fingerprint_group", "column_mixed_fingerprints", "comparable",
    "non_comparable_reasons", "not_reproduced", "record_commit", "preset", "commit",
)


@dataclass(frozen=True)
class Cell:
    """One table cell: the printed value and, where reproduced, the record that reproduces it."""

    paper: float | None            # None: printed as "-"
    mark: str                      # "best", "second" or "" as printed
    value: float | None = None
    n_samples: int | None = None
    fingerprint: str | None = None
    comparable: bool | None = None
    reasons: tuple[str, ...] = ()
    not_reproduced: str | None = None
    variant: str | None = None     # the run that produced `value`
    setting: str | None = None     # a setting column's configuration key
    commit: str | None = None      # the commit the record was made at

    @property
    def reproduced(self) -> bool:
        return self.not_reproduced is None and self.setting is None


# ---------------------------------------------------------------------------------------------
# Records


def records_by_metric(path: Path, *, paper: str, variant: str, preset: str
                      ) -> dict[str, ResultRecord]:
    """Metric records of one run folder's metrics.json, keyed by metric name.

    The records' `source` must name the same paper, variant and preset as the folder they sit in."""
    # Imported here: the metrics package pulls in torch, and the Snakefile imports this module
    # (table_ids) at parse time.
    from sparsegen.metrics.records import read_records

    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file not found (variant {variant!r})")
    out: dict[str, ResultRecord] = {}
    for i, rec in enumerate(read_records(path)):
        if rec.metric in out:
            raise ValueError(f"{path}: two records for metric {rec.metric!r}")
        for name, want in (("paper", paper), ("variant", variant), ("preset", preset)):
            if name in rec.source and rec.source[name] != want:
                raise ValueError(f"{path}: records[{i}] ({rec.metric}) has source.{name} = "
                                 f"{rec.source[name]!r}, expected {want!r}")
        out[rec.metric] = rec
    return out


NOT_RUN = "not run yet: no metrics.json for this variant (tabulated with --available)"


def resolve_cells(table: Table, claims: Claims, runs_dir: Path, preset: str,
                  available_only: bool = False) -> dict[str, dict[str, Cell]]:
    """Pair each printed cell with the record reproducing it (runs_dir/<variant>/metrics.json).
    With `available_only`, a variant without metrics.json gives cells marked not run."""
    records: dict[str, dict[str, ResultRecord] | None] = {}

    def records_of(variant: str) -> dict[str, ResultRecord] | None:
        if variant not in records:
            path = runs_dir / variant / "metrics.json"
            records[variant] = None if available_only and not path.is_file() else \
                records_by_metric(path, paper=claims.paper, variant=variant, preset=preset)
        return records[variant]

    out: dict[str, dict[str, Cell]] = {}
    for rid, row in table.rows.items():
        if row.variant is not None:
            records_of(row.variant)
        out[rid] = {}
        for cid, col in table.columns.items():
            if col.difference_of is not None:
                continue  # filled below, from the cells it differs
            paper = table.cells[rid][cid]
            mark = "best" if rid in col.bold else "second" if rid in col.underline else ""
            if col.setting is not None:
                out[rid][cid] = Cell(paper=paper, mark=mark, setting=col.setting)
                continue
            source = table.sources[rid].get(cid, CellSource(row.variant, row.not_reproduced))
            why_not = col.not_reproduced or source.not_reproduced
            if why_not is not None:
                out[rid][cid] = Cell(paper=paper, mark=mark, not_reproduced=why_not)
                continue
            variant = source.variant
            found = records_of(variant)
            if found is None:
                out[rid][cid] = Cell(paper=paper, mark=mark, not_reproduced=NOT_RUN)
                continue
            rec = found.get(col.metric)
            if rec is None:
                raise ValueError(f"{runs_dir / variant / 'metrics.json'}: no record for metric "
                                 f"{col.metric!r} (table {table.id}, column {cid!r})")
            reasons = judge.reasons(rec, table.protocol, table.recipe_of(cid),
                                    col.hardware_bound)
            out[rid][cid] = Cell(
                paper=paper, mark=mark, value=rec.value, n_samples=rec.n_samples,
                fingerprint=rec.fingerprint, comparable=not reasons, reasons=tuple(reasons),
                variant=variant, commit=rec.git_commit,
            )
    for cid, col in table.columns.items():
        if col.difference_of is not None:
            _fill_differences(table, cid, col, out)
    return {rid: {cid: cells[cid] for cid in table.columns} for rid, cells in out.items()}


def _fill_differences(table: Table, cid: str, col: Column,
                      out: dict[str, dict[str, Cell]]) -> None:
    """Column `cid` = this row's value of `col.difference_of` minus the previous row's."""
    of = table.columns[col.difference_of]
    previous = None
    for rid in table.rows:
        paper = table.cells[rid][cid]
        mark = "best" if rid in col.bold else "second" if rid in col.underline else ""
        here = out[rid][col.difference_of]
        if previous is None:
            out[rid][cid] = Cell(paper=paper, mark=mark,
                                 not_reproduced="the first row has no previous row")
        elif not (here.reproduced and out[previous][col.difference_of].reproduced):
            out[rid][cid] = Cell(paper=paper, mark=mark, not_reproduced=(
                f"needs reproduced {of.label} in this and the previous row"))
        else:
            before = out[previous][col.difference_of]
            reasons = list(dict.fromkeys(before.reasons + here.reasons))
            fingerprint = here.fingerprint
            if before.fingerprint != here.fingerprint:
                reasons.append(f"difference of {of.label} values measured under different "
                               f"protocols ({before.fingerprint}, {here.fingerprint})")
                fingerprint = stable_hash([before.fingerprint, here.fingerprint])
            out[rid][cid] = Cell(
                paper=paper, mark=mark, value=here.value - before.value,
                n_samples=here.n_samples, fingerprint=fingerprint,
                comparable=not reasons, reasons=tuple(reasons), variant=here.variant,
                commit=here.commit)
        previous = rid


# ---------------------------------------------------------------------------------------------
# Rendering


def _group_key(i: int) -> str:
    """a, b, ..., z, aa, ab, ... for fingerprint groups."""
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(ord("a") + r) + letters
    return letters


@dataclass(frozen=True)
class _Legend:
    groups: dict[str, str]              # fingerprint -> group key
    mixed: dict[str, list[str]]         # column id -> its group keys, when more than one
    reasons: dict[str, int]             # non-comparable reason -> footnote number
    not_reproduced: dict[str, str]      # reason -> "n1", "n2", ...


def _legend(table: Table, cells: dict[str, dict[str, Cell]]) -> _Legend:
    groups: dict[str, str] = {}
    reasons: dict[str, int] = {}
    not_rep: dict[str, str] = {}
    mixed: dict[str, list[str]] = {}
    for cid in table.columns:
        keys = []
        for rid in table.rows:
            cell = cells[rid][cid]
            if cell.setting is not None:
                continue
            if cell.not_reproduced is not None:
                not_rep.setdefault(cell.not_reproduced, f"n{len(not_rep) + 1}")
                continue
            key = groups.setdefault(cell.fingerprint, _group_key(len(groups)))
            if key not in keys:
                keys.append(key)
            for reason in cell.reasons:
                reasons.setdefault(reason, len(reasons) + 1)
        if len(keys) > 1:
            mixed[cid] = keys
    return _Legend(groups, mixed, reasons, not_rep)


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _paper_text(cell: Cell, col: Column) -> str:
    if cell.paper is None:
        return "-"
    sign = "+" if col.difference_of is not None and cell.paper > 0 else ""
    return sign + _fmt(cell.paper, col.decimals)


def _paper_md(cell: Cell, col: Column) -> str:
    text = _paper_text(cell, col)
    return {"best": f"**{text}**", "second": f"<u>{text}</u>"}.get(cell.mark, text)


def _reproduced_md(cell: Cell, col: Column, row: Row, legend: _Legend) -> str:
    if cell.not_reproduced is not None:
        return f"— ({legend.not_reproduced[cell.not_reproduced]})"
    sign = "+" if col.difference_of is not None and cell.value > 0 else ""
    text = (f"{sign}{_fmt(cell.value, col.decimals + 2)}"
            f"<sup>{legend.groups[cell.fingerprint]}</sup>")
    if cell.variant != row.variant and col.difference_of is None:
        text += f" (`{cell.variant}`)"
    return text if cell.comparable else f"{text}†"


def _protocol_md(table: Table) -> str:
    p = table.protocol
    measured = ", ".join(f"{name} {p[k]}" for k, (name, _) in judge.EVAL_FACTS.items() if k in p)
    text = f"Paper protocol: {p['data']}; {measured}." if measured else \
        f"Paper protocol: {p['data']}."
    if table.recipe:
        text += " Paper recipe: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                              for k, v in table.recipe.items()) + "."
    return f"{text} {p.get('notes', '')}".rstrip()


def _column_md(col: Column) -> str:
    if col.difference_of is not None:
        what = f"difference: this row's {col.difference_of} minus the previous row's"
    elif col.setting is not None:
        what = f"setting `{col.setting}` of the row's variant"
    else:
        what = f"`{col.metric or 'not reproducible'}`"
    return f"- {col.label}: {what}; {col.protocol}"


def _other_commits(table: Table, cells: dict[str, dict[str, Cell]], commit: str
                   ) -> dict[str, str]:
    """variant -> record commit, for reproduced cells measured at another commit."""
    return {cell.variant: cell.commit for rid in table.rows for cell in cells[rid].values()
            if cell.reproduced and cell.commit not in (None, commit)}


def render_markdown(claims: Claims, table: Table, cells: dict[str, dict[str, Cell]],
                    preset: str, commit: str, claims_display: str) -> str:
    legend = _legend(table, cells)
    entry = table.entry or ("Method" if table.layout == "columns_are_entries" else "Model")
    grouped = any(row.group for row in table.rows.values())
    lines = [f"# {claims.title}: {table.caption}", ""]
    if legend.reasons:
        lines += ["> **Not comparable with the paper** (values marked †): "
                  + "; ".join(legend.reasons) + ".", ""]
    stale = _other_commits(table, cells, commit)
    if stale:
        lines += ["> ⚠ **Records from another commit than this table's** (`" + commit + "`): "
                  + "; ".join(f"`{v}` at `{c}`" for v, c in stale.items())
                  + ". Rerun their jobs to measure them with this code.", ""]
    lines += [
        f"Preset `{preset}` · commit `{commit}` · claims `{claims_display}` · "
        f"paper: {claims.citation}.", "",
        _protocol_md(table), "",
        "Paper values as printed (**bold** best, <u>underlined</u> second best). Reproduced values "
        "carry their record's fingerprint group as a superscript.", "",
    ]
    if table.layout == "columns_are_entries":
        lines += ["The paper prints this table transposed (methods as columns).", ""]
    left = ["Group"] * grouped + [entry, "Variant"]
    header = list(left)
    for cid, col in table.columns.items():
        if col.not_reproduced is not None:
            header.append(f"{col.label} (paper; not reproducible, "
                          f"{legend.not_reproduced[col.not_reproduced]})")
            continue
        if col.setting is not None:
            header.append(f"{col.label} (paper; setting `{col.setting}`)")
            continue
        flag = " ⚠ mixed fingerprints" if cid in legend.mixed else ""
        header += [f"{col.label} (paper)", f"{col.label} (reproduced){flag}"]
    header.append("Comparable")
    lines += ["| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] * len(left) + ["---:"] * (len(header) - len(left) - 1)
                             + ["---"]) + "|"]
    for rid, row in table.rows.items():
        line = [row.group or ""] * grouped + [row.label,
                                             f"`{row.variant}`" if row.variant else "—"]
        row_reasons: list[int] = []
        reproduced = []
        for cid, col in table.columns.items():
            cell = cells[rid][cid]
            line.append(_paper_md(cell, col))
            if col.not_reproduced is None and col.setting is None:
                line.append(_reproduced_md(cell, col, row, legend))
            if cell.reproduced:
                reproduced.append(cell)
                row_reasons += [legend.reasons[r] for r in cell.reasons
                                if legend.reasons[r] not in row_reasons]
        if not reproduced:
            line.append("—")
        elif all(c.comparable for c in reproduced):
            line.append("yes")
        else:
            line.append("no (" + ", ".join(map(str, sorted(row_reasons))) + ")")
        lines.append("| " + " | ".join(line) + " |")
    lines += ["", "**Fingerprints** (a record's protocol hash; one letter = one protocol):", ""]
    for fp, key in legend.groups.items():
        cols = [col.label for cid, col in table.columns.items()
                if any(cells[rid][cid].fingerprint == fp for rid in table.rows)]
        lines.append(f"- <sup>{key}</sup> `{fp}`: {', '.join(cols)}")
    for cid, keys in legend.mixed.items():
        lines.append(f"- ⚠ **{table.columns[cid].label}** mixes protocols "
                     f"{', '.join(keys)}: its reproduced values were not measured the same way.")
    if legend.reasons:
        lines += ["", "**Not comparable** (numbers in the Comparable column):", ""]
        lines += [f"{n}. {reason}" for reason, n in legend.reasons.items()]
    if legend.not_reproduced:
        lines += ["", "**Not reproduced:**", ""]
        lines += [f"- ({key}) {reason}" for reason, key in legend.not_reproduced.items()]
    lines += ["", "**Columns:**", ""]
    lines += [_column_md(col) for col in table.columns.values()]
    return "\n".join(lines) + "\n"


def render_csv(table: Table, cells: dict[str, dict[str, Cell]], preset: str, commit: str) -> str:
    legend = _legend(table, cells)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rid, row in table.rows.items():
        for cid, col in table.columns.items():
            cell = cells[rid][cid]
            done = cell.reproduced
            not_reproduced = cell.not_reproduced or ""
            if cell.setting is not None:
                not_reproduced = f"setting {cell.setting} of the variant, not a measurement"
            writer.writerow({
                "table": table.id, "row": rid, "row_label": row.label,
                "variant": cell.variant or row.variant or "", "column": cid,
                "column_label": col.label, "metric": col.metric or "",
                "higher_is_better": col.higher_is_better,
                "paper_value": "" if cell.paper is None else _fmt(cell.paper, col.decimals),
                "paper_mark": cell.mark,
                "reproduced_value": repr(cell.value) if done else "",
                "n_samples": cell.n_samples if done and cell.n_samples is not None else "",
                "fingerprint": cell.fingerprint or "",
                "fingerprint_group": legend.groups[cell.fingerprint] if done else "",
                "column_mixed_fingerprints": cid in legend.mixed,
                "comparable": cell.comparable if done else "",
                "non_comparable_reasons": "; ".join(cell.reasons),
                "not_reproduced": not_reproduced,
                "record_commit": cell.commit or "",
                "preset": preset, "commit": commit,
            })
    return buf.getvalue()


def tabulate(claims_path: Path, runs_dir: Path, out_dir: Path, preset: str, commit: str,
             available_only: bool = False) -> list[Path]:
    """Write out_dir/<paper>_table<number>.md and .csv for every claims table; return the paths.

    runs_dir is the experiment folder holding one folder per variant, each with metrics.json
    (e.g. runs/<preset>/stya2k/coco_wikiart)."""
    claims = load_claims(claims_path)
    claims_display = _display_path(claims.path)
    written = []
    for table in claims.tables.values():
        cells = resolve_cells(table, claims, Path(runs_dir), preset, available_only)
        stem = Path(out_dir) / f"{claims.paper}_table{table.id}"
        md, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
        write_text(md, render_markdown(claims, table, cells, preset, commit, claims_display))
        write_text(csv_path, render_csv(table, cells, preset, commit))
        written += [md, csv_path]
    return written


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
