"""`sparsegen sync` planning: which outputs to touch for Snakemake, which stages to commit."""

from __future__ import annotations

from sparsegen.sync import UP_TO_DATE, plan_sync, upstream

STAGES = {
    "prepare": {"deps": ["src"], "outs": ["data/p"]},
    "train": {"deps": ["data/p"], "outs": ["runs/final.pt"]},
    "evaluate": {"deps": ["runs/final.pt"], "outs": ["runs/metrics.json"]},
    "tables": {"deps": ["runs/metrics.json"], "outs": ["results/t.md"]},
}
ALL = {o for st in STAGES.values() for o in st["outs"]}
STALE = "update pending"


def test_upstream_is_transitive() -> None:
    assert upstream(STAGES)["tables"] == {"prepare", "train", "evaluate"}
    assert upstream(STAGES)["prepare"] == set()


def test_after_dvc_checkout_everything_is_touched() -> None:
    plans = dict.fromkeys(ALL, STALE)  # arbitrary mtimes, no Snakemake metadata
    touch, commit = plan_sync(STAGES, changed=set(), plans=plans, existing=ALL)
    assert set(touch) == ALL and commit == []


def test_after_a_direct_snakemake_run_everything_is_committed() -> None:
    plans = dict.fromkeys(ALL, UP_TO_DATE)
    touch, commit = plan_sync(STAGES, changed=set(STAGES), plans=plans, existing=ALL)
    assert touch == [] and commit == list(STAGES)


def test_nothing_downstream_of_a_changed_stage_is_touched() -> None:
    """A param change upstream must not be hidden by touching its descendants."""
    plans = dict.fromkeys(ALL, STALE)
    touch, commit = plan_sync(STAGES, changed={"train"}, plans=plans, existing=ALL)
    assert touch == ["data/p"] and commit == []


def test_missing_outputs_are_left_for_the_pipeline() -> None:
    plans = {**dict.fromkeys(ALL, UP_TO_DATE), "results/t.md": STALE}
    touch, commit = plan_sync(STAGES, changed={"tables"}, plans=plans,
                              existing=ALL - {"results/t.md"})
    assert touch == [] and commit == []
