"""pipeline/claims/stya2k.yaml against the paper's tables as printed, and claims validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sparsegen.config import load_params, resolve
from sparsegen.provenance import REPO_ROOT
from sparsegen.tables import ClaimsError, load_claims, table_ids

# The printed tables (StyA2K, ICCV 2023), in the paper's own orientation; <b> best, <u> second.
TABLE1 = """
Content Loss|<b>0.74</b>|0.83|1.00|0.96|<u>0.77</u>|1.26|0.91
Style Loss|<b>0.96</b>|1.20|1.24|<u>0.99</u>|2.65|3.96|1.16
LPIPS|<b>0.56</b>|0.57|0.59|0.63|<u>0.57</u>|0.64|0.62
Content Per.|<b>52.69</b>|9.81|<u>15.56</u>|7.12|8.19|2.25|4.38
Style Per.|<b>29.06</b>|14.81|12.38|<u>16.13</u>|11.31|9.13|7.19
Overall Per.|<b>36.06</b>|<u>15.81</u>|14.50|11.44|11.63|3.56|7.00
Inference Time|0.0121|0.1004|0.0269|<u>0.0041</u>|1.3906|0.3348|<b>0.0038</b>
"""
TABLE1_METHODS = ["StyA2K (Ours)", "StyTr2", "AdaAttN", "SANet", "MST", "Avatar-Net", "AdaIN"]
TABLE2 = """
All-to-all Attention|0.75|0.97|<u>0.56</u>
w/o DA|0.88|1.24|0.57
w/o PA|0.78|0.82|0.59
w/o Step 1 of PA|0.95|<b>0.47</b>|0.62
w/o L_A2K*|0.85|0.92|0.59
w/o L_AdaA2K*|<u>0.75</u>|<u>0.74</u>|0.59
w/o multiple heads|0.85|1.04|0.58
Full Model|<b>0.74</b>|0.96|<b>0.56</b>
"""
TABLE4 = """
0|<b>0.53</b>|1.14|<b>0.52</b>
0.25|0.59|1.09|0.53
0.5|0.65|0.98|0.55
0.75|0.74|<b>0.96</b>|0.56
1|0.83|0.97|0.58
"""

CLAIMS = REPO_ROOT / "pipeline" / "claims" / "stya2k.yaml"


def parse(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Rows of (label, [(printed number, mark)]) with mark 'best', 'second' or ''."""
    rows = []
    for line in text.strip().splitlines():
        label, *cells = line.split("|")
        parsed = []
        for cell in cells:
            m = re.fullmatch(r"<(b|u)>(.*)</\1>", cell)
            parsed.append((m.group(2), {"b": "best", "u": "second"}[m.group(1)]) if m
                          else (cell, ""))
        rows.append((label, parsed))
    return rows


def printed(table, row_id: str, col_id: str) -> tuple[str, str]:
    col = table.columns[col_id]
    mark = "best" if row_id in col.bold else "second" if row_id in col.underline else ""
    return f"{table.cells[row_id][col_id]:.{col.decimals}f}", mark


def test_every_cell_matches_the_paper():
    claims = load_claims(CLAIMS)
    assert list(claims.tables) == ["1", "2", "4"] == table_ids(CLAIMS)
    t1, t2, t4 = (claims.tables[k] for k in ("1", "2", "4"))
    assert [r.label for r in t1.rows.values()] == TABLE1_METHODS
    # Table 1 is printed with methods as columns: row i of TABLE1 is column i of the claims.
    rows1 = parse(TABLE1)
    assert len(rows1) == len(t1.columns) == 7
    for (label, cells), (col_id, col) in zip(rows1, t1.columns.items(), strict=True):
        assert label in col.label
        assert [printed(t1, rid, col_id) for rid in t1.rows] == cells
    for text, table in ((TABLE2, t2), (TABLE4, t4)):
        rows = parse(text)
        assert [label for label, _ in rows] == [r.label for r in table.rows.values()]
        for (_, cells), rid in zip(rows, table.rows, strict=True):
            assert [printed(table, rid, cid) for cid in table.columns] == cells
    n_cells = sum(len(t.rows) * len(t.columns) for t in claims.tables.values())
    assert n_cells == 7 * 7 + 8 * 3 + 5 * 3 == 88


def test_rows_map_to_defined_variants_and_columns_to_metrics():
    claims = load_claims(CLAIMS)
    params = load_params()
    defined = set(params["stya2k"]["variants"])
    for table in claims.tables.values():
        for row in table.rows.values():
            assert row.variant is None or row.variant in defined
        for col in table.columns.values():
            assert col.metric in (None, "content_loss_stytr2", "style_loss_stytr2",
                                  "lpips_alex", "inference_time_s")
        assert table.protocol["n_outputs"] == 300 and table.protocol["size"] == 512
    t1 = claims.tables["1"]
    assert [r.variant for r in t1.rows.values()] == [
        "full", None, "adaattn", None, None, None, "adain"]
    assert all(t1.columns[c].metric is None for c in
               ("content_preference", "style_preference", "overall_preference"))
    assert t1.columns["inference_time"].hardware_bound


def test_table4_rows_use_the_printed_loss_ratio():
    """lambda_3 / (lambda_2 + lambda_3) of each row's variant equals the row label."""
    params = load_params()
    for row in load_claims(CLAIMS).tables["4"].rows.values():
        loss = resolve(params, "stya2k", row.variant, check=False)["loss"]
        ratio = loss["lambda_adaa2k"] / (loss["lambda_a2k"] + loss["lambda_adaa2k"])
        assert ratio == pytest.approx(float(row.label))


def _broken(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load(CLAIMS.read_text())
    edit(doc)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


@pytest.mark.parametrize(("edit", "key", "message"), [
    (lambda d: d["tables"]["2"]["cells"]["wo_da"].pop("lpips"),
     "tables.2.cells.wo_da.lpips", "missing"),
    (lambda d: d["tables"]["4"]["columns"]["lpips"].update(bold=["ratio_9"]),
     "tables.4.columns.lpips.bold", "ratio_9"),
    (lambda d: d["tables"]["1"]["columns"]["lpips"].update(not_reproduced="x"),
     "tables.1.columns.lpips", "exactly one"),
    (lambda d: d["tables"]["1"]["rows"]["sanet"].update(variant="sanet"),
     "tables.1.rows.sanet", "exactly one"),
    (lambda d: d["tables"]["2"]["cells"]["full"].update(style_loss=0.961),
     "tables.2.cells.full.style_loss", "decimals"),
    (lambda d: d["tables"]["4"]["protocol"].update(n_outputs=30),
     "tables.4.protocol", "n_content x n_style"),
    (lambda d: d["tables"]["2"]["columns"]["lpips"].update(higher_is_better="no"),
     "tables.2.columns.lpips.higher_is_better", "expected"),
    (lambda d: d["tables"]["2"].update(layout="diagonal"), "tables.2.layout", "diagonal"),
    (lambda d: d["tables"]["2"]["cells"]["full"].update(fid=1.0),
     "tables.2.cells.full", "unknown key"),
])
def test_invalid_claims_name_file_and_key(tmp_path, edit, key, message):
    path = _broken(tmp_path, edit)
    with pytest.raises(ClaimsError) as err:
        load_claims(path)
    text = str(err.value)
    assert str(path) in text and f"{key}:" in text and message in text


def test_missing_claims_file(tmp_path):
    with pytest.raises(ClaimsError, match="claims file not found"):
        load_claims(tmp_path / "nope.yaml")
