"""pipeline/claims/stya2k.yaml against the paper's tables as printed, and claims validation."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from sparsegen.claims import ClaimsError, load_claims, table_ids
from sparsegen.config import load_params, resolve
from sparsegen.provenance import REPO_ROOT

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


def printed_rows(table) -> dict:
    """The rows the paper prints (not our rows of the authors' weights, `released_of`)."""
    return {rid: row for rid, row in table.rows.items() if row.released_of is None}


def test_released_rows_repeat_the_printed_values_of_their_row():
    for path, row, of, variant in ((CLAIMS, "stya2k_released", "stya2k", "released"),
                                   (STYLENAT, "stylenat_released", "stylenat",
                                    "released_ffhq256")):
        t1 = load_claims(path).tables["1"]
        assert [rid for rid, r in t1.rows.items() if r.released_of] == [row]
        assert t1.rows[row].released_of == of and t1.rows[row].variant == variant
        assert t1.cells[row] == t1.cells[of]
    t1 = load_claims(STYLENAT).tables["1"]
    assert t1.sources["stylenat_released"]["fid_1024"].variant == "released_ffhq1024"


def test_every_cell_matches_the_paper():
    claims = load_claims(CLAIMS)
    assert list(claims.tables) == ["1", "2", "4"] == table_ids(CLAIMS)
    t1, t2, t4 = (claims.tables[k] for k in ("1", "2", "4"))
    assert [r.label for r in printed_rows(t1).values()] == TABLE1_METHODS
    # Table 1 is printed with methods as columns: row i of TABLE1 is column i of the claims.
    rows1 = parse(TABLE1)
    assert len(rows1) == len(t1.columns) == 7
    for (label, cells), (col_id, col) in zip(rows1, t1.columns.items(), strict=True):
        assert label in col.label
        assert [printed(t1, rid, col_id) for rid in printed_rows(t1)] == cells
    for text, table in ((TABLE2, t2), (TABLE4, t4)):
        rows = parse(text)
        assert [label for label, _ in rows] == [r.label for r in table.rows.values()]
        for (_, cells), rid in zip(rows, table.rows, strict=True):
            assert [printed(table, rid, cid) for cid in table.columns] == cells
    n_cells = sum(len(printed_rows(t)) * len(t.columns) for t in claims.tables.values())
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
        "full", None, "adaattn", None, None, None, "adain", "released"]
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


# ---------------------------------------------------------------------------------------------
# StyleNAT (arXiv 2211.05770): Tables 1-4 as printed ("-" is a null cell), and the generic
# schema pieces they use: row groups, a cell from another variant, difference and setting
# columns.

STYLENAT = REPO_ROOT / "pipeline" / "claims" / "stylenat.yaml"
SN_TABLE1 = """
Convolutions|SWAGAN-Bi|5.22|4.06|-|-
Convolutions|StyleGAN2|3.83|2.84|95.79|30.03
Convolutions|StyleGAN3-T|-|2.70|-|-
Convolutions|Projected GAN|3.39|-|-|-
Convolutions|INSGAN|3.31|-|-|-
Convolutions|StyleGAN-XL|2.19|2.02|14.29|67.93
Transformers|GANFormer|7.42|-|-|-
Transformers|GANFormer2|7.77|-|-|-
Transformers|StyleSwin|2.81|5.07|30.20|48.93
Transformers|HiT-L|2.58|6.37|20.67|97.46
Transformers|StyleNAT (ours)|2.05|4.17|32.56|48.92
"""
SN_TABLE2 = """
Diffusion|Diffusion StyleGAN2|3.17
Diffusion|Diffusion ProjectedGAN|1.85
Convs|SWAGAN-Bi|4.97
Convs|StyleGAN2|3.86
Convs|Projected GAN|1.59
Transformer|TransGAN|8.94
Transformer|Unleashing|4.07
Transformer|StyleSwin|2.95
Transformer|StyleNAT(ours)|3.40
"""
SN_TABLE3 = """
StyleSwin|2.81|-
+ NA|2.74|-0.07
+ DiNA|2.24|-0.50
+ Flips|<b>2.05</b>|-0.19
+ Prog Di (4)|2.55|+0.50
"""
SN_TABLE4 = """
2|4|23.33|-
4|4|6.08|-17.25
6|8|5.50|-0.58
8|8|3.40|-2.10
"""


def printed_or_dash(table, row_id: str, col_id: str) -> tuple[str, str]:
    value = table.cells[row_id][col_id]
    if value is None:
        return "-", ""
    text, mark = printed(table, row_id, col_id)
    sign = "+" if table.columns[col_id].difference_of and value > 0 else ""
    return sign + text, mark


CLEAN_COLUMNS = {"fid_256_clean", "fid_1024_clean", "fid_clean"}


def test_stylenat_every_cell_matches_the_paper():
    claims = load_claims(STYLENAT)
    assert table_ids(STYLENAT) == ["1", "2", "3", "4"]
    for text, tid, grouped in ((SN_TABLE1, "1", True), (SN_TABLE2, "2", True),
                               (SN_TABLE3, "3", False), (SN_TABLE4, "4", False)):
        table = claims.tables[tid]
        rows = []
        for line in text.strip().splitlines():
            fields = line.split("|")
            group = fields.pop(0) if grouped else None
            label, cells = parse("|".join(fields))[0]
            rows.append((group, label, cells))
        assert len(rows) == len(printed_rows(table))
        for (group, label, cells), (rid, row) in zip(rows, printed_rows(table).items(),
                                                     strict=True):
            assert (row.group, row.label) == (group, label)
            assert [printed_or_dash(table, rid, cid) for cid in table.columns
                    if cid not in CLEAN_COLUMNS] == cells
            # clean-fid's clean mode is our second FID column: the paper prints none
            assert all(table.cells[rid][cid] is None for cid in table.columns
                       if cid in CLEAN_COLUMNS)
    n_cells = sum(len(printed_rows(t)) * len([c for c in t.columns if c not in CLEAN_COLUMNS])
                  for t in claims.tables.values())
    assert n_cells == 11 * 4 + 9 * 1 + 5 * 2 + 4 * 3 == 75


def test_stylenat_rows_map_to_variants_of_the_printed_configuration():
    claims = load_claims(STYLENAT)
    params = load_params(overrides={"preset": "paper"})
    defined = set(params["stylenat"]["variants"])
    for table in claims.tables.values():
        assert (table.protocol["n_samples"], table.protocol["n_real"],
                table.protocol["inception_size"]) == (50000, 50000, 299)
        for rid, row in table.rows.items():
            assert row.variant is None or row.variant in defined
            for source in table.sources[rid].values():
                assert source.variant is None or source.variant in defined
        for col in table.columns.values():
            assert col.metric in (None, "fid_legacy_pytorch", "fid_clean", "throughput_img_s",
                                  "params_m")
            assert (col.metric == "fid_clean") == (col.id in CLEAN_COLUMNS)
    t1, t2, t3, t4 = (claims.tables[k] for k in "1234")
    reproduced = {rid: r.variant for rid, r in t1.rows.items() if r.variant}
    assert reproduced == {"styleswin": "styleswin", "stylenat": "stylenat",
                          "stylenat_released": "released_ffhq256"}
    assert t1.sources["stylenat"]["fid_1024"].variant == "ffhq1024"
    assert t1.sources["styleswin"]["fid_1024"].not_reproduced
    assert t1.columns["throughput"].hardware_bound
    assert {r.variant for r in t2.rows.values()} == {None, "church_p8"}
    assert [r.variant for r in t3.rows.values()] == ["styleswin", "na", "dina", "stylenat",
                                                    "prog_di4"]
    assert t3.columns["diff"].difference_of == t4.columns["diff"].difference_of == "fid"

    def model(variant):
        return resolve(params, "stylenat", variant, check=False)

    assert model("stylenat")["model"]["resolution"] == 256
    assert model("ffhq1024")["model"]["resolution"] == 1024
    # Table 3: StyleSwin -> NA (both halves local) -> DiNA -> + Flips -> 4 partitions.
    s = {r.variant: model(r.variant) for r in t3.rows.values()}
    assert s["styleswin"]["model"]["attention"] == "swin"
    assert s["na"]["model"]["dilations"] == "local"
    assert [s[v]["train"]["hflip"] for v in ("styleswin", "na", "dina", "stylenat")] == [
        False, False, False, True]
    assert s["dina"]["model"] == s["stylenat"]["model"]
    assert s["prog_di4"]["model"]["partitions"] == 4
    # Table 4: the row label is the partition count, Min Heads the variant's setting.
    for rid, row in t4.rows.items():
        m = model(row.variant)
        assert m["model"]["partitions"] == int(row.label)
        assert m["model"]["min_heads"] == t4.cells[rid]["min_heads"]
        assert m["data"]["images"] == "lsun_church256"
    assert t4.columns["min_heads"].setting == "model.min_heads"


def _stylenat_broken(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load(STYLENAT.read_text())
    edit(doc)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


@pytest.mark.parametrize(("edit", "key", "message"), [
    (lambda d: d["tables"]["1"]["cells"]["stylenat"].update(
        fid_1024={"value": 4.17, "variant": "ffhq1024", "not_reproduced": "x"}),
     "tables.1.cells.stylenat.fid_1024", "exactly one of `variant`"),
    (lambda d: d["tables"]["3"]["cells"]["na"].update(diff={"value": -0.07, "variant": "na"}),
     "tables.3.cells.na.diff", "only cells of a measured"),
    (lambda d: d["tables"]["1"]["cells"]["stylenat"].update(fid_1024={"variant": "ffhq1024"}),
     "tables.1.cells.stylenat.fid_1024.value", "missing"),
    (lambda d: d["tables"]["1"]["cells"]["stylenat"].pop("params"),
     "tables.1.cells.stylenat.params", "missing"),
    (lambda d: d["tables"]["3"]["columns"]["diff"].update(difference_of="lpips"),
     "tables.3.columns.diff.difference_of", "'lpips' is not a measured"),
    (lambda d: d["tables"]["4"]["columns"]["min_heads"].update(metric="params_m"),
     "tables.4.columns.min_heads", "exactly one"),
    (lambda d: d["tables"]["2"]["protocol"].update(n_content=3),
     "tables.2.protocol", "exactly one protocol kind"),
    (lambda d: d["tables"]["2"]["protocol"].pop("n_real"),
     "tables.2.protocol.n_real", "missing"),
    (lambda d: d["tables"]["2"]["cells"]["stylenat"].update(fid="3.40"),
     "tables.2.cells.stylenat.fid", "expected a number"),
])
def test_stylenat_schema_errors_name_file_and_key(tmp_path, edit, key, message):
    path = _stylenat_broken(tmp_path, edit)
    with pytest.raises(ClaimsError) as err:
        load_claims(path)
    text = str(err.value)
    assert str(path) in text and f"{key}:" in text and message in text


# Reproduced StyleNAT tables from fake metric records.

SN_METRICS = ("fid_legacy_pytorch", "fid_clean", "throughput_img_s", "params_m")


def _sn_records(tmp_path: Path, odd_fid: str | None = None) -> tuple[Path, dict[str, float]]:
    """metrics.json for every StyleNAT variant: FID = 10 + index, distinct per variant; the
    FID of `odd_fid` gets another protocol."""
    from sparsegen.metrics.records import Measurement, ResultRecord, write_records

    runs = tmp_path / "runs"
    variants = list(load_params()["stylenat"]["variants"])
    fids = {}
    for i, v in enumerate(variants):
        records = []
        for j, metric in enumerate(SN_METRICS):
            value = 10.0 + i + j / 10
            protocol = {"n_a": 200, "mode": "other" if (v, metric) == (
                odd_fid, "fid_legacy_pytorch") else "legacy_pytorch"}
            rec = ResultRecord.from_measurement(metric, metric == "throughput_img_s",
                                                Measurement(value, 200, protocol))
            rec.source = {"paper": "stylenat", "variant": v, "preset": "smoke"}
            rec.facts = {"preset": "smoke",
                         "data": {"images": {"name": "smoke_faces", "real": False}}}
            records.append(rec)
        fids[v] = 10.0 + i
        write_records(runs / v / "metrics.json", records)
    return runs, fids


def _sn_csv(out: Path, tid: str) -> dict[tuple[str, str], dict[str, str]]:
    import csv

    with (out / f"stylenat_table{tid}.csv").open(newline="") as f:
        return {(r["row"], r["column"]): r for r in csv.DictReader(f)}


def test_stylenat_tables_resolve_cell_variants_differences_and_settings(tmp_path):
    from sparsegen.cli import main

    runs, fids = _sn_records(tmp_path)
    out = tmp_path / "tables"
    assert main(["tabulate", "--claims", str(STYLENAT), "--runs-dir", str(runs),
                 "--out-dir", str(out), "--preset", "smoke"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"stylenat_table{n}.{ext}" for n in "1234" for ext in ("csv", "md")]
    t1 = _sn_csv(out, "1")
    assert float(t1["stylenat", "fid_256"]["reproduced_value"]) == fids["stylenat"]
    assert float(t1["stylenat", "fid_1024"]["reproduced_value"]) == fids["ffhq1024"]
    assert t1["stylenat", "fid_1024"]["variant"] == "ffhq1024"
    assert t1["stylenat", "fid_256"]["variant"] == "stylenat"
    assert t1["styleswin", "fid_1024"]["reproduced_value"] == ""
    assert "256x256 only" in t1["styleswin", "fid_1024"]["not_reproduced"]
    assert t1["swagan_bi", "throughput"]["paper_value"] == ""  # printed "-"
    assert t1["stylenat", "throughput"]["paper_value"] == "32.56"
    md1 = (out / "stylenat_table1.md").read_text()
    assert f"{fids['ffhq1024']:.4f}<sup>" in md1 and "(`ffhq1024`)" in md1
    assert "| Transformers | StyleNAT (ours) | `stylenat` | 2.05 |" in md1
    assert "| Convolutions | StyleGAN3-T | — | - | — (n" in md1
    assert ("Paper protocol: FFHQ (70,000 images); generated images 50000, real images 50000, "
            "Inception input side 299.") in md1
    # Table 3: diff = FID of the row minus the row above, from the same protocol.
    t3 = _sn_csv(out, "3")
    order = ["styleswin", "na", "dina", "stylenat", "prog_di4"]
    for rid, (before, here) in zip(["na", "dina", "flips", "prog_di"], pairwise(order),
                                   strict=True):
        cell = t3[rid, "diff"]
        assert float(cell["reproduced_value"]) == pytest.approx(fids[here] - fids[before])
        assert cell["fingerprint"] == t3[rid, "fid"]["fingerprint"]
        assert cell["comparable"] == "False" and "synthetic data" in cell[
            "non_comparable_reasons"]
    assert t3["styleswin", "diff"]["reproduced_value"] == ""
    assert t3["styleswin", "diff"]["paper_value"] == ""
    assert t3["prog_di", "diff"]["paper_value"] == "0.50"
    md3 = (out / "stylenat_table3.md").read_text()
    assert "| + Prog Di (4) | `prog_di4` | 2.55 |" in md3 and "| +0.50 | +1.0000<sup>" in md3
    assert "| + Flips | `stylenat` | **2.05** |" in md3
    # Table 4: Min Heads is the printed setting; nothing is measured for it.
    t4 = _sn_csv(out, "4")
    assert t4["p6", "min_heads"]["paper_value"] == "8"
    assert t4["p6", "min_heads"]["reproduced_value"] == ""
    assert "model.min_heads" in t4["p6", "min_heads"]["not_reproduced"]
    md4 = (out / "stylenat_table4.md").read_text()
    assert "Min Heads (paper; setting `model.min_heads`)" in md4
    assert "| 6 | `church_p6` | 8 | 5.50 |" in md4 and "| Partitions | Variant |" in md4


def test_stylenat_difference_across_protocols_is_not_comparable(tmp_path):
    from sparsegen.tables import tabulate

    runs, _ = _sn_records(tmp_path, odd_fid="na")
    tabulate(STYLENAT, runs, tmp_path / "tables", "smoke", "abc1234")
    t3 = _sn_csv(tmp_path / "tables", "3")
    for rid in ("na", "dina"):  # each differs the odd FID with a regular one
        assert "different protocols" in t3[rid, "diff"]["non_comparable_reasons"]
        assert t3[rid, "diff"]["fingerprint"] not in (t3[rid, "fid"]["fingerprint"],
                                                      t3["flips", "fid"]["fingerprint"])
    assert "different protocols" not in t3["flips", "diff"]["non_comparable_reasons"]
