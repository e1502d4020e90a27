"""Claims files: every number a paper prints, validated and loaded.

`pipeline/claims/<paper>.yaml` holds every printed cell of the paper's tables, with the protocol
each table was measured under (`protocol`) and the training recipe behind it (`recipe`). Its
structure is checked against pipeline/schemas/claims.schema.yaml (errors name the file and the
key path), then what a schema cannot express: references between ids, every row x column
present, values with no more than the printed decimals.

A row may be one the paper does not print (`released_of`): the model of a printed row from the
authors' released weights through our protocol, beside that row's printed values.

A table has measured columns (a metric record per row's variant), difference columns (this
row's value minus the previous row's, as ablation tables print them) and setting columns (a
configuration printed beside the numbers, e.g. a variant's head count). A cell may name its own
variant (one row whose columns come from two runs, e.g. a model at two resolutions) or why it
is not reproduced; a printed "-" is a null paper value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from sparsegen.config import ParamsError, load_yaml, schema_problems
from sparsegen.provenance import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "pipeline" / "schemas" / "claims.schema.yaml"
LAYOUTS = ("rows_are_entries", "columns_are_entries")
COLUMN_KINDS = ("metric", "not_reproduced", "difference_of", "setting")
# Evaluation protocols: the count and size keys of each kind. A table's protocol gives all keys
# of one kind (a kind the judge compares facts with) or none (only data and notes).
PROTOCOL_KINDS = {
    "stylisation": ("n_content", "n_style", "n_outputs", "size"),
    "generation": ("n_samples", "n_real", "inception_size"),
}


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
    recipe: dict[str, Any] = field(default_factory=dict)  # overrides of the table's recipe
    task: str | None = None            # the cells come from each row's `<task>_` variant


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    variant: str | None
    not_reproduced: str | None
    group: str | None = None           # the paper's row group (e.g. "Convolutions")
    released_of: str | None = None     # not printed: that row's model from the authors' weights


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
    recipe: dict[str, Any] = field(default_factory=dict)  # how the paper trained its models

    def recipe_of(self, column: str) -> dict[str, Any]:
        """The training recipe behind `column`'s cells: the table's, then the column's."""
        return {**self.recipe, **self.columns[column].recipe}


@dataclass(frozen=True)
class Claims:
    path: Path
    paper: str
    title: str
    citation: str
    tables: dict[str, Table]


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_yaml(SCHEMA_PATH))


def _fail(path: Path, key: str, message: str) -> ClaimsError:
    return ClaimsError(f"{path}: {key}: {message}")


def _column(path: Path, key: str, cid: str, obj: dict[str, Any], rows: set[str]) -> Column:
    given = [k for k in COLUMN_KINDS if obj.get(k) is not None]
    if len(given) != 1:
        raise _fail(path, key, "give exactly one of `metric`, `not_reproduced`, "
                               f"`difference_of` and `setting` (given: {given or 'none'})")
    for mark in ("bold", "underline"):
        unknown = sorted(set(obj.get(mark, [])) - rows)
        if unknown:
            raise _fail(path, f"{key}.{mark}", f"unknown row id(s) {unknown}")
    return Column(
        id=cid, label=obj["label"], metric=obj.get("metric"),
        higher_is_better=obj["higher_is_better"], decimals=obj["decimals"],
        protocol=obj["protocol"], not_reproduced=obj.get("not_reproduced"),
        hardware_bound=obj.get("hardware_bound"), bold=tuple(obj.get("bold", ())),
        underline=tuple(obj.get("underline", ())), difference_of=obj.get("difference_of"),
        setting=obj.get("setting"), recipe=dict(obj.get("recipe", {})), task=obj.get("task"))


def task_variant(variant: str, task: str) -> str:
    """The row's variant of another task: its prefix (up to the first `_`) replaced by `task`
    (df_full -> celeba_full)."""
    _prefix, sep, rest = variant.partition("_")
    return f"{task}_{rest}" if sep else f"{task}_{variant}"


def _source(path: Path, key: str, variant: str | None, not_reproduced: str | None
            ) -> CellSource:
    if (variant is None) == (not_reproduced is None):
        raise _fail(path, key, "give exactly one of `variant` and `not_reproduced`")
    return CellSource(variant, not_reproduced)


def _check_protocol(path: Path, key: str, p: dict[str, Any]) -> None:
    kinds = [kind for kind, names in PROTOCOL_KINDS.items() if any(n in p for n in names)]
    if len(kinds) > 1:
        raise _fail(path, key, "give the keys of exactly one protocol kind: " + "; ".join(
            f"{kind}: {', '.join(names)}" for kind, names in PROTOCOL_KINDS.items()))
    for kind in kinds:
        for name in PROTOCOL_KINDS[kind]:
            if name not in p:
                raise _fail(path, f"{key}.{name}", f"required key is missing ({kind} protocol: "
                                                   f"{', '.join(PROTOCOL_KINDS[kind])})")
    if "n_outputs" in p and p["n_content"] * p["n_style"] != p["n_outputs"]:
        raise _fail(path, key, "n_outputs must equal n_content x n_style")


def _table(path: Path, tid: str, obj: dict[str, Any]) -> Table:
    key = f"tables.{tid}"
    rows = {}
    for rid, r in obj["rows"].items():
        _source(path, f"{key}.rows.{rid}", r["variant"], r.get("not_reproduced"))
        rows[rid] = Row(id=rid, label=r["label"], variant=r["variant"],
                        not_reproduced=r.get("not_reproduced"), group=r.get("group"),
                        released_of=r.get("released_of"))
    for rid, row in rows.items():
        of = row.released_of
        if of is not None and (of not in rows or rows[of].released_of is not None):
            raise _fail(path, f"{key}.rows.{rid}.released_of", f"{of!r} is not a printed row of "
                                                               "this table")
    columns = {cid: _column(path, f"{key}.columns.{cid}", cid, c, set(rows))
               for cid, c in obj["columns"].items()}
    for cid, col in columns.items():
        of = col.difference_of
        if of is not None and (of not in columns or columns[of].metric is None):
            raise _fail(path, f"{key}.columns.{cid}.difference_of",
                        f"{of!r} is not a measured (`metric`) column of this table")
    p = obj["protocol"]
    _check_protocol(path, f"{key}.protocol", p)
    extra = sorted(set(obj["cells"]) - set(rows))
    if extra:
        raise _fail(path, f"{key}.cells", f"unknown key(s) {extra} (not row ids)")
    cells: dict[str, dict[str, float | None]] = {}
    sources: dict[str, dict[str, CellSource]] = {}
    for rid in rows:
        rkey = f"{key}.cells.{rid}"
        row_cells = obj["cells"].get(rid)
        if row_cells is None:
            raise _fail(path, rkey, "row has no cells")
        extra = sorted(set(row_cells) - set(columns))
        if extra:
            raise _fail(path, rkey, f"unknown key(s) {extra} (not column ids)")
        cells[rid], sources[rid] = {}, {}
        for cid, col in columns.items():
            if cid not in row_cells:
                raise _fail(path, f"{rkey}.{cid}", "required key is missing (null for a printed "
                                                   "'-')")
            value = row_cells[cid]
            if isinstance(value, dict):
                if col.metric is None:
                    raise _fail(path, f"{rkey}.{cid}", "only cells of a measured (`metric`) "
                                                       "column name their own source")
                sources[rid][cid] = _source(path, f"{rkey}.{cid}", value.get("variant"),
                                            value.get("not_reproduced"))
                value = value["value"]
            if value is not None and (not math.isfinite(value)
                                      or round(value, col.decimals) != value):
                raise _fail(path, f"{rkey}.{cid}", f"{value!r} has more than the column's "
                                                   f"{col.decimals} printed decimals")
            cells[rid][cid] = None if value is None else float(value)
            row = rows[rid]
            if col.task and cid not in sources[rid] and row.variant is not None:
                sources[rid][cid] = CellSource(task_variant(row.variant, col.task), None)
    for rid, row in rows.items():
        if row.released_of is not None and cells[rid] != cells[row.released_of]:
            raise _fail(path, f"{key}.cells.{rid}", "a released row repeats the printed values "
                                                    f"of row {row.released_of!r}")
    return Table(id=tid, caption=obj["caption"], layout=obj["layout"], protocol=dict(p),
                 columns=columns, rows=rows, cells=cells, sources=sources,
                 entry=obj.get("entry"), recipe=dict(obj.get("recipe", {})))


def load_claims(path: str | Path) -> Claims:
    """Read and validate a claims file; every error names the file and the key."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ClaimsError(f"{path}: claims file not found") from None
    except yaml.YAMLError as e:
        raise ClaimsError(f"{path}: not valid YAML: {e}") from None
    try:
        problems = schema_problems(_validator(), doc)
    except ParamsError as e:  # the schema file itself is unreadable
        raise ClaimsError(str(e)) from None
    if problems:
        raise ClaimsError(f"{path} is invalid:\n  - " + "\n  - ".join(problems))
    tables = {str(tid): _table(path, str(tid), t) for tid, t in doc["tables"].items()}
    return Claims(path=path, paper=doc["paper"], title=doc["title"], citation=doc["citation"],
                  tables=tables)


def table_ids(claims_path: str | Path) -> list[str]:
    """The table numbers of a claims file, as used in `<paper>_table<number>.md`."""
    return list(load_claims(claims_path).tables)
