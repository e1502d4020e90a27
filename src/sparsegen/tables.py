"""Paper claims beside reproduced metric records: claims validation and results/tables.

`pipeline/claims/<paper>.yaml` holds every printed cell (schema in its header comment). Each table
is written as markdown (for readers) and long-format CSV (one row per cell) showing the paper
value, the reproduced value, the record's fingerprint and whether it is comparable.

Besides measured columns (a metric record per row's variant) a table may hold difference
columns (this row's value minus the previous row's, as ablation tables print them) and setting
columns (a configuration printed beside the numbers, e.g. a variant's head count). A cell may
name its own variant (one row whose columns come from two runs, e.g. a model at two
resolutions) or why it is not reproduced; a printed "-" is a null paper value.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sparsegen.io import write_text
from sparsegen.provenance import REPO_ROOT, stable_hash

if TYPE_CHECKING:
    from sparsegen.metrics.records import ResultRecord

LAYOUTS = ("rows_are_entries", "columns_are_entries")
# Integer keys of each kind of evaluation protocol; a table's protocol has those of one kind.
PROTOCOL_KINDS = {
    "stylisation": ("n_content", "n_style", "n_outputs", "size"),
    "generation": ("n_samples", "n_real", "inception_size"),
}
CSV_FIELDS = (
    "table", "row", "row_label", "variant", "column", "column_label", "metric",
    "higher_is_better", "paper_value", "paper_mark", "reproduced_value", "n_samples",
    "fingerprint", "fingerprint_group", "column_mixed_fingerprints", "comparable",
    "non_comparable_reasons", "not_reproduced", "preset", "commit",
)


class ClaimsError(ValueError):
    """A claims file is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class Column:
    id: str
    label: str
    metric: str | None
    higher_is_better: bool
    decimals: int
    protocol: str
    not_reproduced: str | None
    hardware_bound: str | None
    bold: tuple[str, ...]
    underline: tuple[str, ...]
    difference_of: str | None = None   # this row's value of that column minus the previous row's
    setting: str | None = None         # a configuration key of the row's variant, not measured


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    variant: str | None
    not_reproduced: str | None
    group: str | None = None           # the paper's row group (e.g. "Convolutions")


@dataclass(frozen=True)
class CellSource:
    """Where one cell's reproduced value comes from when it is not its row's variant."""

    variant: str | None
    not_reproduced: str | None


@dataclass(frozen=True)
class Table:
    id: str
    caption: str
    layout: str
    protocol: dict[str, Any]
    columns: dict[str, Column]
    rows: dict[str, Row]
    cells: dict[str, dict[str, float | None]]      # printed values; None for a printed "-"
    sources: dict[str, dict[str, CellSource]]      # per-cell variant overrides
    entry: str | None = None                       # the printed header of the row labels


@dataclass(frozen=True)
class Claims:
    path: Path
    paper: str
    title: str
    citation: str
    tables: dict[str, Table]


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

    @property
    def reproduced(self) -> bool:
        return self.not_reproduced is None and self.setting is None


# ---------------------------------------------------------------------------------------------
# Claims


class _Checker:
    """Typed access to a YAML mapping with errors naming the file and the key path."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> ClaimsError:
        return ClaimsError(f"{self.path}: {key}: {message}")

    def mapping(self, obj: Any, key: str) -> dict[str, Any]:
        if not isinstance(obj, dict) or not obj:
            raise self.fail(key, f"expected a non-empty mapping, got {obj!r}")
        return obj

    def get(self, obj: dict[str, Any], name: str, key: str, kind: type | tuple[type, ...],
            optional: bool = False) -> Any:
        if name not in obj:
            if optional:
                return None
            raise self.fail(f"{key}.{name}", "required key is missing")
        value = obj[name]
        if optional and value is None:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.fail(f"{key}.{name}", f"expected {' or '.join(k.__name__ for k in kinds)}, "
                                             f"got {value!r}")
        return value

    def only(self, obj: dict[str, Any], key: str, allowed: set[str]) -> None:
        extra = sorted(set(obj) - allowed)
        if extra:
            raise self.fail(key, f"unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _column(c: _Checker, cid: str, obj: Any, key: str, row_ids: set[str]) -> Column:
    obj = c.mapping(obj, key)
    c.only(obj, key, {"label", "metric", "higher_is_better", "decimals", "protocol",
                      "not_reproduced", "hardware_bound", "bold", "underline", "difference_of",
                      "setting"})
    if "metric" not in obj:
        raise c.fail(f"{key}.metric", "required key is missing (null when not reproducible)")
    kinds = {name: c.get(obj, name, key, str, optional=True)
             for name in ("metric", "not_reproduced", "difference_of", "setting")}
    if sum(v is not None for v in kinds.values()) != 1:
        raise c.fail(key, "give exactly one of `metric`, `not_reproduced`, `difference_of` "
                          "and `setting`")
    decimals = c.get(obj, "decimals", key, int)
    if not 0 <= decimals <= 8:
        raise c.fail(f"{key}.decimals", f"must be 0..8, got {decimals}")
    marks = {}
    for name in ("bold", "underline"):
        ids = c.get(obj, name, key, list, optional=True) or []
        unknown = sorted(set(map(str, ids)) - row_ids)
        if unknown:
            raise c.fail(f"{key}.{name}", f"unknown row id(s) {unknown}")
        marks[name] = tuple(map(str, ids))
    return Column(
        id=cid, label=c.get(obj, "label", key, str), metric=kinds["metric"],
        higher_is_better=c.get(obj, "higher_is_better", key, bool), decimals=decimals,
        protocol=c.get(obj, "protocol", key, str), not_reproduced=kinds["not_reproduced"],
        hardware_bound=c.get(obj, "hardware_bound", key, str, optional=True),
        bold=marks["bold"], underline=marks["underline"],
        difference_of=kinds["difference_of"], setting=kinds["setting"],
    )


def _variant_or_reason(c: _Checker, obj: dict[str, Any], key: str
                       ) -> tuple[str | None, str | None]:
    """(variant, not_reproduced): exactly one of the two is given."""
    variant = c.get(obj, "variant", key, str, optional=True)
    not_reproduced = c.get(obj, "not_reproduced", key, str, optional=True)
    if (variant is None) == (not_reproduced is None):
        raise c.fail(key, "give exactly one of `variant` and `not_reproduced`")
    return variant, not_reproduced


def _row(c: _Checker, rid: str, obj: Any, key: str) -> Row:
    obj = c.mapping(obj, key)
    c.only(obj, key, {"label", "variant", "not_reproduced", "group"})
    if "variant" not in obj:
        raise c.fail(f"{key}.variant", "required key is missing (null when not reproduced)")
    variant, not_reproduced = _variant_or_reason(c, obj, key)
    return Row(id=rid, label=c.get(obj, "label", key, str), variant=variant,
               not_reproduced=not_reproduced,
               group=c.get(obj, "group", key, str, optional=True))


def _protocol(c: _Checker, obj: Any, key: str) -> dict[str, Any]:
    protocol = c.mapping(obj, key)
    kinds = [kind for kind, names in PROTOCOL_KINDS.items() if any(n in protocol for n in names)]
    if len(kinds) != 1:
        raise c.fail(key, "give the keys of exactly one protocol kind: " + "; ".join(
            f"{kind}: {', '.join(names)}" for kind, names in PROTOCOL_KINDS.items()))
    for name in PROTOCOL_KINDS[kinds[0]]:
        c.get(protocol, name, key, int)
    if kinds[0] == "stylisation" and \
            protocol["n_content"] * protocol["n_style"] != protocol["n_outputs"]:
        raise c.fail(key, "n_outputs must equal n_content x n_style")
    return dict(protocol)


def _cell(c: _Checker, obj: Any, key: str, col: Column
          ) -> tuple[float | None, CellSource | None]:
    """A printed value (a number, or null for "-"), or {value, variant | not_reproduced}."""
    source = None
    if isinstance(obj, dict):
        c.only(obj, key, {"value", "variant", "not_reproduced"})
        if "value" not in obj:
            raise c.fail(f"{key}.value", "required key is missing (null for a printed '-')")
        variant, not_reproduced = _variant_or_reason(c, obj, key)
        if col.metric is None:
            raise c.fail(key, "only cells of a measured (`metric`) column name their own source")
        source = CellSource(variant, not_reproduced)
        obj = obj["value"]
    if obj is None:
        return None, source
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise c.fail(key, f"expected a number, null (printed '-') or a mapping, got {obj!r}")
    if not math.isfinite(obj) or round(obj, col.decimals) != obj:
        raise c.fail(key, f"{obj!r} has more than the column's {col.decimals} printed decimals")
    return float(obj), source


def _table(c: _Checker, tid: str, obj: Any) -> Table:
    key = f"tables.{tid}"
    if not re.fullmatch(r"[A-Za-z0-9]+", tid):
        raise c.fail(key, "table ids are the printed table numbers (letters and digits only)")
    obj = c.mapping(obj, key)
    c.only(obj, key, {"caption", "layout", "protocol", "columns", "rows", "cells", "entry"})
    layout = c.get(obj, "layout", key, str)
    if layout not in LAYOUTS:
        raise c.fail(f"{key}.layout", f"{layout!r} is not one of {list(LAYOUTS)}")
    protocol = _protocol(c, c.get(obj, "protocol", key, dict), f"{key}.protocol")
    rows = {str(rid): _row(c, str(rid), r, f"{key}.rows.{rid}")
            for rid, r in c.mapping(c.get(obj, "rows", key, dict), f"{key}.rows").items()}
    columns = {str(cid): _column(c, str(cid), col, f"{key}.columns.{cid}", set(rows))
               for cid, col in c.mapping(c.get(obj, "columns", key, dict),
                                         f"{key}.columns").items()}
    for cid, col in columns.items():
        of = col.difference_of
        if of is not None and (of not in columns or columns[of].metric is None):
            raise c.fail(f"{key}.columns.{cid}.difference_of",
                         f"{of!r} is not a measured (`metric`) column of this table")
    raw_cells = c.mapping(c.get(obj, "cells", key, dict), f"{key}.cells")
    c.only(raw_cells, f"{key}.cells", set(rows))
    cells: dict[str, dict[str, float | None]] = {}
    sources: dict[str, dict[str, CellSource]] = {}
    for rid in rows:
        rkey = f"{key}.cells.{rid}"
        if rid not in raw_cells:
            raise c.fail(rkey, "row has no cells")
        row_cells = c.mapping(raw_cells[rid], rkey)
        c.only(row_cells, rkey, set(columns))
        cells[rid], sources[rid] = {}, {}
        for cid, col in columns.items():
            if cid not in row_cells:
                raise c.fail(f"{rkey}.{cid}", "required key is missing (null for a printed '-')")
            value, source = _cell(c, row_cells[cid], f"{rkey}.{cid}", col)
            cells[rid][cid] = value
            if source is not None:
                sources[rid][cid] = source
    return Table(id=tid, caption=c.get(obj, "caption", key, str), layout=layout,
                 protocol=protocol, columns=columns, rows=rows, cells=cells, sources=sources,
                 entry=c.get(obj, "entry", key, str, optional=True))


def table_ids(claims_path: str | Path) -> list[str]:
    """The table numbers of a claims file, as used in `<paper>_table<number>.md`."""
    return list(load_claims(claims_path).tables)


def load_claims(path: str | Path) -> Claims:
    """Read and validate a claims file; every error names the file and the key."""
    path = Path(path)
    c = _Checker(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ClaimsError(f"{path}: claims file not found") from None
    except yaml.YAMLError as e:
        raise ClaimsError(f"{path}: not valid YAML: {e}") from None
    doc = c.mapping(doc, "<top level>")
    c.only(doc, "<top level>", {"paper", "title", "citation", "tables"})
    tables = {str(tid): _table(c, str(tid), t)
              for tid, t in c.mapping(c.get(doc, "tables", "<top level>", dict),
                                      "tables").items()}
    return Claims(path=path, paper=c.get(doc, "paper", "<top level>", str),
                  title=c.get(doc, "title", "<top level>", str),
                  citation=c.get(doc, "citation", "<top level>", str), tables=tables)


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


def resolve_cells(table: Table, claims: Claims, runs_dir: Path, preset: str
                  ) -> dict[str, dict[str, Cell]]:
    """Pair each printed cell with the record reproducing it (runs_dir/<variant>/metrics.json)."""
    records: dict[str, dict[str, ResultRecord]] = {}

    def records_of(variant: str) -> dict[str, ResultRecord]:
        if variant not in records:
            records[variant] = records_by_metric(runs_dir / variant / "metrics.json",
                                                 paper=claims.paper, variant=variant,
                                                 preset=preset)
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
            rec = records_of(variant).get(col.metric)
            if rec is None:
                raise ValueError(f"{runs_dir / variant / 'metrics.json'}: no record for metric "
                                 f"{col.metric!r} (table {table.id}, column {cid!r})")
            reasons = list(rec.non_comparable_reasons)
            comparable = rec.comparable
            if col.hardware_bound and comparable:  # the record did not say so itself
                comparable = False
                reasons.append(f"{col.hardware_bound}; measured on {rec.device}")
            if not comparable and not reasons:
                reasons.append("record marked non-comparable without a reason")
            out[rid][cid] = Cell(
                paper=paper, mark=mark, value=rec.value, n_samples=rec.n_samples,
                fingerprint=rec.fingerprint, comparable=comparable,
                reasons=tuple(dict.fromkeys(reasons)), variant=variant,
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
                comparable=bool(here.comparable and before.comparable
                                and before.fingerprint == here.fingerprint),
                reasons=tuple(reasons), variant=here.variant)
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


def _protocol_md(p: dict[str, Any]) -> str:
    if "n_content" in p:
        text = (f"{p['n_content']} content x {p['n_style']} style = {p['n_outputs']} outputs at "
                f"{p['size']}x{p['size']}.")
    else:
        side = p["inception_size"]
        text = (f"FID between {p['n_samples']} generated and {p['n_real']} real images, "
                f"Inception input {side}x{side}.")
    return f"Paper protocol: {text} {p.get('notes', '')}".rstrip()


def _column_md(col: Column) -> str:
    if col.difference_of is not None:
        what = f"difference: this row's {col.difference_of} minus the previous row's"
    elif col.setting is not None:
        what = f"setting `{col.setting}` of the row's variant"
    else:
        what = f"`{col.metric or 'not reproducible'}`"
    return f"- {col.label}: {what}; {col.protocol}"


def render_markdown(claims: Claims, table: Table, cells: dict[str, dict[str, Cell]],
                    preset: str, commit: str, claims_display: str) -> str:
    legend = _legend(table, cells)
    entry = table.entry or ("Method" if table.layout == "columns_are_entries" else "Model")
    grouped = any(row.group for row in table.rows.values())
    lines = [f"# {claims.title}: {table.caption}", ""]
    if legend.reasons:
        lines += ["> **Not comparable with the paper** (values marked †): "
                  + "; ".join(legend.reasons) + ".", ""]
    lines += [
        f"Preset `{preset}` · commit `{commit}` · claims `{claims_display}` · "
        f"paper: {claims.citation}.", "",
        _protocol_md(table.protocol), "",
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
                "preset": preset, "commit": commit,
            })
    return buf.getvalue()


def tabulate(claims_path: Path, runs_dir: Path, out_dir: Path, preset: str, commit: str
             ) -> list[Path]:
    """Write out_dir/<paper>_table<number>.md and .csv for every claims table; return the paths.

    runs_dir is the experiment folder holding one folder per variant, each with metrics.json
    (e.g. runs/<preset>/stya2k/coco_wikiart)."""
    claims = load_claims(claims_path)
    claims_display = _display_path(claims.path)
    written = []
    for table in claims.tables.values():
        cells = resolve_cells(table, claims, Path(runs_dir), preset)
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
