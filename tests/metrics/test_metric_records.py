import json

import pytest
import torch

from sparsegen import judge
from sparsegen.metrics import (
    Measurement,
    MetricContext,
    ResultRecord,
    get,
    names,
    read_records,
    register,
    write_records,
)
from sparsegen.metrics.records import fingerprint
from sparsegen.weights import ResolvedWeights

JSON_KEYS = {
    "metric", "value", "n_samples", "higher_is_better", "protocol", "extractor_weights", "seeds",
    "fingerprint", "per_sample", "versions", "git_commit", "created_at", "device", "source",
    "facts", "extra",
}


def _record(sha: str = "ab" * 32, protocol: dict | None = None) -> ResultRecord:
    m = Measurement(value=1.5, n_samples=3, protocol=protocol or {"image_size": [64, 64]},
                    extractor=ResolvedWeights("vgg19_normalised", None, sha),
                    per_sample=[1.0, 1.5, 2.0], seeds=[0])
    return ResultRecord.from_measurement("content_loss_stytr2", False, m, torch.device("cpu"))


def test_registry_has_exactly_the_protocol_names():
    assert names() == sorted([
        "content_loss_stytr2", "style_loss_stytr2", "lpips_alex", "ssim_gauss11", "psnr", "l1",
        "fid_legacy_pytorch", "fid_clean", "swd_pggan", "ssim_gray_skimage",
        "semantic_consistency_cocosnet", "style_relevance_color_cocosnet",
        "style_relevance_texture_cocosnet", "style_loss_adain", "psnr_ilat", "ssim_ilat",
        "fid_inception_imagenet", "masked_rate_pixel", "masked_rate_token"])
    assert get("ssim_gauss11").higher_is_better and not get("fid_clean").higher_is_better
    with pytest.raises(KeyError, match=r"fid50k.*registered: content_loss_stytr2"):
        get("fid50k")
    with pytest.raises(ValueError, match="registered twice"):
        register("psnr", higher_is_better=True, description="dup")(lambda a, b, ctx: None)


def test_context_validates_and_resolves_offline(tmp_path):
    with pytest.raises(ValueError, match="weights_mode 'download'"):
        MetricContext(weights_mode="download")
    with pytest.raises(ValueError, match="batch_size"):
        MetricContext(batch_size=0)
    ctx = MetricContext(weights_mode="random", weights_dir=str(tmp_path), device="cpu")
    assert ctx.resolve("alexnet_torchvision").sha256 == "random-init"
    given = ResolvedWeights("alexnet_torchvision", tmp_path / "x.pth", "cd" * 32)
    assert MetricContext(pretrained={"alexnet_torchvision": given}).resolve(
        "alexnet_torchvision") is given


def test_record_json_shape_round_trip_and_file(tmp_path):
    rec = _record()
    d = rec.to_dict()
    assert set(d) == JSON_KEYS
    assert d["extractor_weights"] == {"name": "vgg19_normalised", "sha256": "ab" * 32}
    assert len(d["fingerprint"]) == 12 and int(d["fingerprint"], 16) >= 0
    assert "torch" in d["versions"] and d["created_at"].endswith("+00:00")
    json.dumps(d)  # serialisable as is
    assert ResultRecord.from_dict(d) == rec
    rec.source = {"paper": "stya2k", "variant": "full"}
    path = tmp_path / "m" / "metrics.json"
    write_records(path, [rec, _record(sha="ef" * 32)])
    assert json.loads(path.read_text())["summary"] == {"content_loss_stytr2": 1.5}
    back = read_records(path)
    assert back[0] == rec and back[1].extractor_weights["sha256"] == "ef" * 32


def test_fingerprint_depends_on_protocol_and_weights_only():
    a, b = _record(), _record()
    assert a.fingerprint == b.fingerprint  # created_at, versions etc. do not enter
    assert _record(sha="ef" * 32).fingerprint != a.fingerprint
    assert _record(protocol={"image_size": [32, 32]}).fingerprint != a.fingerprint
    assert a.fingerprint == fingerprint("content_loss_stytr2", {"image_size": [64, 64]},
                                        "ab" * 32)


def test_a_random_init_extractor_is_a_reason_of_the_judge():
    rec = _record(sha="random-init")
    reasons = judge.reasons(rec, {}, {})
    assert len(reasons) == 1 and "vgg19_normalised" in reasons[0]
    assert judge.reasons(_record(), {}, {}) == []


def test_bad_records_files_name_the_problem(tmp_path):
    d = _record().to_dict()
    del d["fingerprint"]
    with pytest.raises(ValueError, match="lacks keys \\['fingerprint'\\]"):
        ResultRecord.from_dict(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"records": [d]}))
    with pytest.raises(ValueError, match=r"bad.json: records\[0\]"):
        read_records(path)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"bad\.json: expected a JSON object"):
        read_records(path)


def test_metric_call_attaches_source(photos64):
    rec = get("l1")(photos64[:2], photos64[2:4], MetricContext(), source={"paper": "dynast"})
    assert rec.source == {"paper": "dynast"} and rec.metric == "l1"
    assert rec.extractor_weights is None and not judge.reasons(rec, {}, {})


def test_the_judge_reads_released_weights_facts():
    """The authors' files: no recipe check (their recipe is the paper's), comparable when data
    and extractors are; a stand-in never, with the reason naming it."""
    import dataclasses

    from sparsegen.train.checkpoint import training_facts

    recipe = {"global_batch": 64, "iterations": 1_000_000, "checkpoint": "best"}

    def released(kind: str) -> ResultRecord:
        ckpt = {"step": 940000, "settings": {"weights_state": {}},
                "extra": {"released": {"sources": {"stylenat_ffhq256": {
                    "kind": kind, "sha256": "cd" * 32, "url": "https://x"}},
                    "stand_in": kind != "file", "step": 940000}}}
        facts = {"preset": "paper", "training": training_facts(ckpt)}
        return dataclasses.replace(_record(), facts=facts)

    assert judge.reasons(released("file"), {"data": "FFHQ"}, recipe) == []
    why = judge.reasons(released("stand-in"), {"data": "FFHQ"}, recipe)
    assert len(why) == 1 and "stand-in" in why[0] and "stylenat_ffhq256" in why[0]
    trained = dataclasses.replace(_record(), facts={"preset": "paper", "training": training_facts(
        {"step": 10, "settings": {"train": {"batch_size": 8, "iterations": 10}}})})
    assert any("global batch 8" in r for r in judge.reasons(trained, {"data": "FFHQ"}, recipe))
