"""Paper-vs-reproduced tables rendered from fake metric records."""

from __future__ import annotations

import csv
import json

import pytest

from sparsegen.claims import load_claims
from sparsegen.metrics.records import write_records
from sparsegen.provenance import REPO_ROOT
from sparsegen.tables import tabulate

CLAIMS = REPO_ROOT / "pipeline" / "claims" / "stya2k.yaml"


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run(tmp_path, runs):
    return tabulate(CLAIMS, runs, tmp_path / "tables", "smoke", "abc1234")


def test_cells_carry_paper_value_record_value_fingerprint_and_flag(tmp_path, write_metrics,
                                                                  fakes):
    runs = write_metrics(tmp_path / "runs", comparable=True)
    paths = run(tmp_path, runs)
    assert [p.name for p in paths] == [f"stya2k_table{n}.{ext}" for n in ("1", "2", "4")
                                       for ext in ("md", "csv")]
    claims = load_claims(CLAIMS)
    fingerprints = {}
    for table_id, table in claims.tables.items():
        rows = read_csv(tmp_path / "tables" / f"stya2k_table{table_id}.csv")
        assert len(rows) == len(table.rows) * len(table.columns)
        for r in rows:
            assert (r["preset"], r["commit"]) == ("smoke", "abc1234")
            row, col = table.rows[r["row"]], table.columns[r["column"]]
            assert float(r["paper_value"]) == table.cells[r["row"]][r["column"]]
            if row.variant is None or col.metric is None:
                assert r["reproduced_value"] == r["fingerprint"] == r["comparable"] == ""
                assert r["not_reproduced"] == (col.not_reproduced or row.not_reproduced)
                continue
            assert float(r["reproduced_value"]) == fakes.metric_value(row.variant, col.metric)
            assert r["fingerprint"] == fakes.make_record(row.variant, col.metric).fingerprint
            fingerprints.setdefault(col.metric, set()).add(r["fingerprint"])
            # Inference time never compares with the paper's RTX 3090 timing.
            hardware = col.metric == "inference_time_s"
            assert r["comparable"] == str(not hardware)
            assert ("RTX 3090" in r["non_comparable_reasons"]) == hardware
            assert r["column_mixed_fingerprints"] == "False"
    # One protocol per metric: the same fingerprint in every row, different across metrics.
    assert all(len(f) == 1 for f in fingerprints.values()) and len(fingerprints) == 4
    # Table 4's 0.75 row is the full model.
    t4 = {r["row"]: r for r in read_csv(tmp_path / "tables" / "stya2k_table4.csv")
          if r["column"] == "lpips"}
    assert float(t4["ratio_075"]["reproduced_value"]) == fakes.metric_value("full", "lpips_alex")

    md2 = (tmp_path / "tables" / "stya2k_table2.md").read_text()
    assert "Not comparable" not in md2 and "†" not in md2 and "mixed" not in md2
    assert "Preset `smoke`" in md2 and "commit `abc1234`" in md2
    assert "| w/o DA | `wo_da` | 0.88 |" in md2
    full_lpips = f"{fakes.metric_value('full', 'lpips_alex'):.4f}<sup>"
    assert f"| **0.56** | {full_lpips}" in md2
    md1 = (tmp_path / "tables" / "stya2k_table1.md").read_text()
    assert md1.splitlines()[2].startswith("> **Not comparable with the paper**")
    assert "RTX 3090" in md1.splitlines()[2]
    assert "| StyTr2 | — | 0.83 | — (n" in md1
    assert "User study: Content Per. ↑ (paper; not reproducible" in md1


def test_non_comparable_records_are_labelled(tmp_path, write_metrics):
    runs = write_metrics(tmp_path / "runs", comparable=False)
    run(tmp_path, runs)
    for n in ("1", "2", "4"):
        md = (tmp_path / "tables" / f"stya2k_table{n}.md").read_text()
        banner = md.splitlines()[2]
        assert banner.startswith("> **Not comparable with the paper**")
        assert "12 outputs (paper: 300)" in banner and "synthetic data" in banner
        rows = [r for r in read_csv(tmp_path / "tables" / f"stya2k_table{n}.csv")
                if r["variant"] and r["reproduced_value"]]
        assert rows and all(r["comparable"] == "False" for r in rows)
        assert all("synthetic data" in r["non_comparable_reasons"] for r in rows)
    md2 = (tmp_path / "tables" / "stya2k_table2.md").read_text()
    assert "| Full Model | `full` |" in md2
    full_row = next(line for line in md2.splitlines() if line.startswith("| Full Model"))
    assert full_row.count("†") == 3 and full_row.endswith("| no (1, 2, 3, 4, 5, 6, 7, 8) |")


def test_mixed_fingerprints_in_a_column_are_marked(tmp_path, write_metrics):
    runs = write_metrics(tmp_path / "runs", odd=("wo_pa", "style_loss_stytr2"))
    run(tmp_path, runs)
    rows = read_csv(tmp_path / "tables" / "stya2k_table2.csv")
    style = {r["row"]: r for r in rows if r["column"] == "style_loss"}
    assert style["wo_pa"]["fingerprint_group"] != style["full"]["fingerprint_group"]
    assert {r["column_mixed_fingerprints"] for r in style.values()} == {"True"}
    assert {r["column_mixed_fingerprints"] for r in rows if r["column"] != "style_loss"} == {
        "False"}
    md = (tmp_path / "tables" / "stya2k_table2.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model"))
    assert "Style Loss ↓ (reproduced) ⚠ mixed fingerprints" in header
    assert header.count("mixed") == 1
    assert "⚠ **Style Loss ↓** mixes protocols" in md
    odd = style["wo_pa"]
    assert f"<sup>{odd['fingerprint_group']}</sup> `{odd['fingerprint']}`" in md
    # Table 4 does not show w/o PA: its style column is not mixed.
    t4 = read_csv(tmp_path / "tables" / "stya2k_table4.csv")
    assert {r["column_mixed_fingerprints"] for r in t4} == {"False"}


def test_missing_metrics_file_names_it(tmp_path, write_metrics):
    runs = write_metrics(tmp_path / "runs")
    (runs / "wo_da" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"wo_da/metrics\.json: metrics file not found"):
        run(tmp_path, runs)


def test_missing_metric_record_names_file_and_metric(tmp_path, write_metrics):
    runs = write_metrics(tmp_path / "runs")
    path = runs / "adain" / "metrics.json"
    doc = json.loads(path.read_text())
    doc["records"] = [r for r in doc["records"] if r["metric"] != "lpips_alex"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"adain/metrics\.json: no record for metric 'lpips_alex'"):
        run(tmp_path, runs)


def test_records_from_another_variant_or_preset_are_refused(tmp_path, write_metrics, fakes):
    runs = write_metrics(tmp_path / "runs")
    write_records(runs / "wo_pa" / "metrics.json",
                  [fakes.make_record("wo_da", "lpips_alex")])
    with pytest.raises(ValueError, match=r"wo_pa/metrics\.json.*source\.variant = 'wo_da'"):
        run(tmp_path, runs)
    write_records(runs / "wo_pa" / "metrics.json",
                  [fakes.make_record("wo_pa", "lpips_alex", preset="paper")])
    with pytest.raises(ValueError, match=r"source\.preset = 'paper', expected 'smoke'"):
        run(tmp_path, runs)


def test_available_only_tabulates_the_released_row_alone(tmp_path, write_metrics, fakes):
    """After only the authors' weights were evaluated, `--available` gives their row beside
    the printed values and marks every other reproduced cell not run; without it a missing
    metrics.json is an error naming it."""
    runs = write_metrics(tmp_path / "runs", comparable=True, variants=("released",))
    with pytest.raises(FileNotFoundError, match=r"full/metrics\.json"):
        run(tmp_path, runs)
    tabulate(CLAIMS, runs, tmp_path / "tables", "smoke", "abc1234", available_only=True)
    rows = {(r["row"], r["column"]): r for r in read_csv(tmp_path / "tables" /
                                                         "stya2k_table1.csv")}
    released = rows[("stya2k_released", "style_loss")]
    assert released["paper_value"] == rows[("stya2k", "style_loss")]["paper_value"] == "0.96"
    assert float(released["reproduced_value"]) == fakes.metric_value("released",
                                                                      "style_loss_stytr2")
    assert released["comparable"] == "True"
    assert rows[("stya2k", "style_loss")]["not_reproduced"].startswith("not run yet")
    md = (tmp_path / "tables" / "stya2k_table1.md").read_text()
    assert "| StyA2K, authors' weights (our protocol) | `released` | 0.74 |" in md
