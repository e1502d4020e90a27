"""params.yaml: schema errors name the key and the allowed values; settings resolve in order."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sparsegen.config import (
    ParamsError,
    load_params,
    resolve,
    unit_param_keys,
    unit_settings,
    validate_params,
)


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return load_params()


def _invalid(params: dict[str, Any], edit) -> str:
    bad = copy.deepcopy(params)
    edit(bad)
    with pytest.raises(ParamsError) as info:
        validate_params(bad)
    return str(info.value)


def test_committed_params_are_valid(params: dict[str, Any]) -> None:
    assert params["preset"] in ("smoke", "paper")


def test_bad_enum_names_key_path_and_allowed_values(params: dict[str, Any]) -> None:
    msg = _invalid(params, lambda p: p.update(preset="fast"))
    assert "preset: 'fast' is not allowed; allowed values: 'smoke', 'paper'" in msg


def test_bad_nested_value_names_full_key_path(params: dict[str, Any]) -> None:
    msg = _invalid(params, lambda p: p["stya2k"]["model"].update(heads=3))
    assert "stya2k.model.heads: 3 is not allowed" in msg and "8" in msg


def test_unknown_key_is_an_error_with_allowed_keys(params: dict[str, Any]) -> None:
    msg = _invalid(params, lambda p: p["stya2k"]["variants"]["full"].update(modle={}))
    assert "stya2k.variants.full: unknown key(s) 'modle'" in msg
    assert "allowed keys: loss, model, released, train" in msg


def test_smoke_block_may_only_change_sizes_lengths_and_data(params: dict[str, Any]) -> None:
    msg = _invalid(params, lambda p: p["stya2k"]["smoke"]["train"].update(lr=1.0))
    assert "stya2k.smoke.train: unknown key(s) 'lr'" in msg


def test_sizes_must_fit_the_block_grid(params: dict[str, Any]) -> None:
    msg = _invalid(params, lambda p: p["stya2k"]["smoke"]["eval"].update(size=96))
    assert "eval.size 96" in msg and "relu5_1" in msg and "multiple of 64" in msg


def test_undefined_dataset_reference(params: dict[str, Any]) -> None:
    msg = _invalid(params, lambda p: p["stya2k"]["smoke"]["data"].update(style="nope"))
    assert "data.style: dataset 'nope' is not defined" in msg


def test_resolve_applies_preset_then_variant(params: dict[str, Any]) -> None:
    smoke = resolve(params, "stya2k", "wo_multihead")
    assert smoke["model"]["heads"] == 1  # variant
    assert smoke["train"]["iterations"] == params["stya2k"]["smoke"]["train"]["iterations"]
    assert smoke["train"]["lr"] == params["stya2k"]["train"]["lr"]  # base, untouched by smoke
    assert smoke["datasets"]["content"]["name"] == "smoke_content"
    paper = resolve({**params, "preset": "paper"}, "stya2k", "wo_multihead")
    assert paper["train"]["iterations"] == params["stya2k"]["train"]["iterations"]
    assert paper["datasets"]["content"]["name"] == params["stya2k"]["data"]["content"]


def test_unknown_variant(params: dict[str, Any]) -> None:
    with pytest.raises(ParamsError, match="no variant 'nope'"):
        resolve(params, "stya2k", "nope")


def test_units_receive_only_what_they_read(params: dict[str, Any]) -> None:
    train = unit_settings(params, "stya2k", "full", "train")
    evaluate = unit_settings(params, "stya2k", "full", "evaluate")
    assert "eval" not in train and "train" not in evaluate and "loss" not in evaluate
    keys = unit_param_keys(params, "stya2k", "wo_da", "train")
    assert "stya2k.variants.wo_da" in keys
    assert not any(k.startswith("stya2k.variants.") and k != "stya2k.variants.wo_da"
                   for k in keys)
    assert "stya2k.smoke.train" in keys
    paper_keys = unit_param_keys({**params, "preset": "paper"}, "stya2k", "wo_da", "train")
    assert not any(".smoke" in k for k in paper_keys)


def test_stylenat_smoke_applies_after_the_variant(params: dict[str, Any]) -> None:
    """The smoke block shrinks every variant alike; its `variants` entry swaps in stand-ins."""
    church = resolve(params, "stylenat", "church_p8")
    assert church["model"]["partitions"] == 8 and church["model"]["min_heads"] == 8  # variant
    assert church["model"]["resolution"] == params["stylenat"]["smoke"]["model"]["resolution"]
    assert church["datasets"]["images"]["name"] == "smoke_church"
    big = resolve(params, "stylenat", "ffhq1024")
    assert big["model"]["resolution"] == 32 and big["datasets"]["images"]["name"] == "smoke_faces32"
    assert big["train"]["batch_size"] == params["stylenat"]["smoke"]["train"]["batch_size"]
    paper = resolve({**params, "preset": "paper"}, "stylenat", "ffhq1024")
    assert paper["model"]["resolution"] == 1024 and paper["train"]["batch_size"] == 4
    assert paper["datasets"]["images"]["name"] == "ffhq1024"
    keys = unit_param_keys(params, "stylenat", "ffhq1024", "train")
    assert {"stylenat.smoke.model", "stylenat.smoke.variants.ffhq1024.model",
            "stylenat.smoke.variants.ffhq1024.data", "stylenat.variants.ffhq1024"} <= set(keys)
    assert not any("variants.church" in k for k in keys)


def test_stylenat_smoke_may_not_change_the_method(params: dict[str, Any]) -> None:
    msg = _invalid(params, lambda p: p["stylenat"]["smoke"]["model"].update(attention="swin"))
    assert "stylenat.smoke.model: unknown key(s) 'attention'" in msg


def test_stylenat_impossible_partitions_name_the_key(params: dict[str, Any]) -> None:
    def edit(p: dict[str, Any]) -> None:  # at 256 px, 128 channels / 32 = 4 heads < 8 partitions
        p["preset"] = "paper"
        p["stylenat"]["variants"]["church_p8"]["model"]["min_heads"] = 4

    msg = _invalid(params, edit)
    assert "model.partitions" in msg and "church_p8" in msg


def test_the_smoke_showcase_is_its_variant_trained_longer(params: dict[str, Any]) -> None:
    from sparsegen.config import SHOWCASE, variant_entries

    showcase, full = resolve(params, "stya2k", SHOWCASE), resolve(params, "stya2k", "full")
    block = params["stya2k"]["smoke"][SHOWCASE]
    assert showcase["variant"] == SHOWCASE and block["of"] == "full"
    assert showcase["model"] == full["model"] and showcase["loss"] == full["loss"]
    assert showcase["train"]["iterations"] == block["train"]["iterations"] > full["train"][
        "iterations"]
    assert showcase["eval"]["untrained_reference"] and not full["eval"].get(
        "untrained_reference")
    assert SHOWCASE not in variant_entries({**params, "preset": "paper"}, "stya2k")
    keys = unit_param_keys(params, "stya2k", SHOWCASE, "train")
    assert {"stya2k.variants.full", f"stya2k.smoke.{SHOWCASE}"} <= set(keys)
    msg = _invalid(params, lambda p: p["stya2k"]["smoke"][SHOWCASE].update(of="nope"))
    assert "stya2k.smoke.showcase.of: no variant 'nope'" in msg


def test_released_variants_name_manifest_entries_and_train_nothing(params: dict[str, Any]
                                                                   ) -> None:
    msg = _invalid(params, lambda p: p["stylenat"]["variants"]["released_ffhq256"].update(
        released=["stylenat_ffhq512"]))
    assert "stylenat.variants.released_ffhq256.released: 'stylenat_ffhq512' is not in the " \
           "weights manifest" in msg
    from sparsegen.config import _released_problems  # papers whose schema allows stages

    assert _released_problems("toy.variants.r", {"released": ["stylenat_ffhq256"],
                                                 "uses": {"codes": "tok"}, "stage": "two"}) == [
        "toy.variants.r.uses: a released variant is not trained (remove `uses`)"]
    msg = _invalid(params, lambda p: p["stylenat"]["smoke"]["showcase"].update(
        of="released_ffhq256"))
    assert "stylenat.smoke.showcase.of: 'released_ffhq256' is a released variant" in msg


def test_released_variants_have_a_convert_job_and_no_training(params: dict[str, Any]) -> None:
    from sparsegen.layout import Layout

    for preset in ("smoke", "paper"):
        lay = Layout({**params, "preset": preset})
        assert lay.released("stylenat") == ["released_ffhq256", "released_ffhq1024"]
        assert lay.released("stya2k") == ["released"]
        assert "released_ffhq256" not in lay.variants("stylenat")
        assert "released_ffhq256" in lay.evaluated("stylenat")
        inputs = lay.sample_inputs("stylenat", "released_ffhq256")
        assert inputs["checkpoint"].endswith("/released_ffhq256/converted.pt")
        assert "kept" not in inputs
        settings = lay.job_settings("stylenat", "released_ffhq256", "convert")
        assert settings["released"] == ["stylenat_ffhq256"]
        assert settings["model"]["position_precision"] == "float32"
        assert "train" not in settings and "loss" not in settings
        # no file fetched here: a stand-in, and nothing is an input (nothing downloads)
        assert settings["released_state"] == {"stylenat_ffhq256": "stand-in"}
        assert lay.convert_inputs("stylenat", "released_ffhq256")["released"] == []
    paper = Layout({**params, "preset": "paper", "weights": "pretrained"})
    assert paper.convert_inputs("stya2k", "released")["released"] == [
        f"{params['paths']['weights']}/latest_net_{m}.pth" for m in ("A2K", "transform",
                                                                      "decoder")]
    assert paper.job_settings("stylenat", "released_ffhq1024", "convert")["released_state"] \
        == {"stylenat_ffhq1024": "missing"}


def test_checkpoint_of_samples_another_variants_checkpoint(params: dict[str, Any]) -> None:
    """iLAT's Taming*: no training job of its own, its sample job loads taming_ffhq's final.pt,
    and changing taming_ffhq's training stales it; a bad reference names the key."""
    from sparsegen.layout import Layout

    lay = Layout(params)
    assert "taming_star_ffhq" not in lay.variants("ilat")
    assert "taming_star_ffhq" in lay.evaluated("ilat")
    assert lay.checkpoint("ilat", "taming_star_ffhq") == lay.run("ilat", "taming_ffhq",
                                                                 "final.pt")
    assert "ilat.variants.taming_ffhq" in unit_param_keys(params, "ilat", "taming_star_ffhq",
                                                          "evaluate")
    msg = _invalid(params, lambda p: p["ilat"]["variants"]["taming_star_ffhq"].update(
        checkpoint_of="nope"))
    assert "ilat.variants.taming_star_ffhq.checkpoint_of: no variant 'nope'" in msg
    msg = _invalid(params, lambda p: p["ilat"]["variants"]["taming_star_ffhq"].update(
        uses={"tokenizer": "ts_ffhq", "condition_tokenizer": "sketch_ffhq"}))
    assert "ilat.variants.taming_star_ffhq: `stage` and `uses` must equal those of " \
           "'taming_ffhq'" in msg
    msg = _invalid(params, lambda p: p["ilat"]["variants"]["taming_star_ffhq"].update(
        checkpoint_of="released_ffhq"))
    assert "'released_ffhq' is not a trained variant" in msg
