"""StyA2K training task, a short training run, checkpoint loading and sampling."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from sparsegen.data.images import load_rgb, random_crop_flip
from sparsegen.io import read_image
from sparsegen.models.stya2k.losses import global_style_loss
from sparsegen.models.stya2k.sampling import sample
from sparsegen.models.stya2k.task import build_task, dataset_split, load_model
from sparsegen.train import checkpoint, loop, schedules

CPU = torch.device("cpu")


def test_batch_is_a_function_of_the_generator(settings):
    task = build_task(settings, CPU)
    a = task.batch(0, torch.Generator().manual_seed(5))
    b = task.batch(7, torch.Generator().manual_seed(5))
    c = task.batch(0, torch.Generator().manual_seed(6))
    assert a["content"].shape == a["style"].shape == (2, 3, 64, 64)
    assert torch.equal(a["content"], b["content"]) and torch.equal(a["style"], b["style"])
    assert not torch.equal(a["content"], c["content"])
    assert float(a["content"].min()) >= 0 and float(a["content"].max()) <= 1


def _held_out_style_loss(task, settings) -> float:
    """Global style loss (Eq. 14) on every test content x test style pair, fixed crops."""
    _, contents = dataset_split(settings, "content", "test")
    _, styles = dataset_split(settings, "style", "test")
    t = settings["train"]
    gen = torch.Generator().manual_seed(0)

    def crops(samples):
        return torch.stack([random_crop_flip(load_rgb(s.path, size=t["load_size"]),
                                             t["crop_size"], False, gen) for s in samples])

    c = crops([a for a in contents for _ in styles])
    s = crops([b for _ in contents for b in styles])
    net = task.net
    with torch.no_grad():
        out = net.stylize(c, s)
        return float(global_style_loss(net.encode(out), net.encode(s),
                                       settings["loss"]["global_layers"], "mse"))


def test_short_training_lowers_the_style_loss(settings, tmp_path):
    """40 steps: constant learning rate for 10, then linearly to 0 (the paper's schedule)."""
    settings["train"].update(iterations=40, batch_size=2, checkpoint_every=20, decay_start=10)
    task = build_task(settings, CPU)
    before = _held_out_style_loss(task, settings)
    t = settings["train"]
    cfg = loop.LoopConfig(iterations=t["iterations"], checkpoint_every=t["checkpoint_every"],
                          log_every=t["log_every"], seed=settings["seed"],
                          lr_factor=schedules.from_settings(t))
    assert loop.run(task, cfg, settings, tmp_path / "run", tmp_path / "final.pt",
                    tmp_path / "loss.csv")
    after = _held_out_style_loss(task, settings)
    assert after < 0.7 * before
    with open(tmp_path / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and {"loss", "global", "a2k", "adaa2k"} <= set(rows[0])

    ckpt = checkpoint.load(tmp_path / "final.pt")
    assert set(ckpt["modules"]) == {"transform", "decoder"}  # the frozen encoder is not saved
    net, stored = load_model(tmp_path / "final.pt", CPU)
    assert stored == settings
    for name, module in (("transform", net.transform), ("decoder", net.decoder)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, task.modules[name].state_dict()[key])


def _checkpoint(settings, path: Path) -> Path:
    task = build_task(settings, CPU)
    checkpoint.save(path, step=0, modules=task.modules, optimizers={}, settings=settings,
                    extra=task.checkpoint_extra)
    return path


def test_sample_writes_every_pair(settings, tmp_path):
    ckpt = _checkpoint(settings, tmp_path / "model.pt")
    out = tmp_path / "samples"
    sample(settings, ckpt, out, CPU)
    with open(out / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "content_id", "style_id", "output", "content_path",
                             "style_path"]
    contents = list(dict.fromkeys(r["content_id"] for r in rows))
    styles = list(dict.fromkeys(r["style_id"] for r in rows))
    assert len(contents) == 2 and len(styles) == 3 and len(rows) == 6
    assert all(i.startswith("content") and int(i[7:]) >= 6 for i in contents)  # test split
    for r in rows:
        assert r["output"] == f"c-{r['content_id']}__s-{r['style_id']}.png" == r["id"] + ".png"
        assert read_image(out / r["output"]).shape == (64, 64, 3)
        # paths as configured (paths.prepared), so a checkout elsewhere resolves them too
        prepared = Path(settings["paths"]["prepared"])
        assert Path(r["content_path"]).parent.parent == prepared / "content"
        assert Path(r["content_path"]).exists() and Path(r["style_path"]).exists()
    timing = json.loads((out / "timing.json").read_text())
    assert timing["repeats"] == 1 and timing["size"] == 64 and timing["device"].startswith("cpu")

    again = tmp_path / "again"
    sample(settings, ckpt, again, CPU)  # the selection depends on eval.selection_seed only
    assert (again / "samples.csv").read_text() == (out / "samples.csv").read_text()


def test_sample_needs_enough_test_images(settings, tmp_path):
    ckpt = _checkpoint(settings, tmp_path / "model.pt")
    settings["eval"]["n_style"] = 9
    with pytest.raises(ValueError, match=r"style test split has 5 images, the evaluation needs 9"):
        sample(settings, ckpt, tmp_path / "samples", CPU)


def test_checkpoint_refuses_a_different_encoder(settings, tmp_path):
    ckpt = _checkpoint(settings, tmp_path / "model.pt")
    data = checkpoint.load(ckpt)
    data["extra"] = {"encoder": "vgg19_normalised:sha256:" + "0" * 64}
    torch.save(data, ckpt)
    with pytest.raises(ValueError, match="trained with encoder vgg19_normalised:sha256:0000"):
        load_model(ckpt, CPU)
