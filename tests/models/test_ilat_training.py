"""iLAT's training tasks and sampling on the smoke stick figures (CPU, tiny smoke widths): a
tokenizer or transformer run stopped and resumed (the tokenizer across `train.mask_from`) ends
bitwise where an uninterrupted one does; the tokenizer's masked phase mixes no / the drawn / a
full hole; the transformer's loss counts masked tokens only (Eq. 6), Taming's every token; a
short run lowers held-out CE; editing: an empty hole is the reconstruction without sampling, a
full hole plain autoregression, cached = uncached, and Taming* (a causal checkpoint sampled with
the LA mask) takes one step per masked token."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsegen.attention.local_autoregressive import causal_mask, la_mask, token_mask
from sparsegen.config import load_params, resolve
from sparsegen.data import sources
from sparsegen.models.ilat import data, sampling
from sparsegen.models.ilat.task import Tokens, build_task, load_transformer
from sparsegen.models.ilat.tokenizer import build_tokenizer
from sparsegen.models.ilat.transformer import loss as token_loss
from sparsegen.train import checkpoint, loop, schedules

CPU = torch.device("cpu")
GRID = 8  # 32² images, two halvings


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny ops: threads only contend for the cores."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return load_params(overrides={"preset": "smoke"})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, params: dict[str, Any]) -> Path:
    """smoke_pa: 2 training videos and 1 test video of 8 frames."""
    root = tmp_path_factory.mktemp("prepared")
    sources.prepare("smoke_pa", {**params["datasets"]["smoke_pa"], "n_train": 16, "n_test": 8},
                    None, root / "smoke_pa")
    return root


def settings_on(params: dict[str, Any], prepared: Path, variant: str,
                tokenizer: Path | None = None, **train: Any) -> dict[str, Any]:
    """The smoke settings of `variant` on the prepared stick figures (a transformer on the
    tokenizer checkpoint `tokenizer`), with `train` overrides."""
    s = copy.deepcopy(resolve(params, "ilat", variant))
    s["paths"] = {**s["paths"], "prepared": str(prepared),
                  "weights": str(prepared / "weights")}
    s["weights"] = "random"
    s["device"] = "cpu"
    if tokenizer is not None:
        s["uses"] = {"tokenizer": {"variant": "ts_pa", "checkpoint": str(tokenizer)}}
    s["train"].update(train)
    return s


def run(settings: dict[str, Any], run_dir: Path, stop_after: int | None = None):
    torch.manual_seed(settings["seed"])
    task = build_task(settings, CPU)
    t = settings["train"]
    cfg = loop.LoopConfig(iterations=t["iterations"], checkpoint_every=t["checkpoint_every"],
                          log_every=t["log_every"], seed=settings["seed"],
                          lr_factor=schedules.from_settings(t), stop_after=stop_after,
                          prefetch=0)
    return task, loop.run(task, cfg, settings, run_dir, run_dir / "final.pt",
                          run_dir / "log.csv")


def assert_same_runs(straight: Path, resumed: Path, modules: set[str], optimizers: set[str]
                     ) -> None:
    a, b = (checkpoint.load(d / "final.pt") for d in (straight, resumed))
    assert set(a["modules"]) == modules
    for module in modules:
        assert a["modules"][module].keys() == b["modules"][module].keys()
        for key, value in a["modules"][module].items():
            assert torch.equal(value, b["modules"][module][key]), f"{module}.{key}"
    last_a, last_b = (checkpoint.load(d / "ckpt/last.pt")["optimizers"]
                      for d in (straight, resumed))
    assert set(last_a) == optimizers
    for name in optimizers:
        state_a, state_b = last_a[name]["state"], last_b[name]["state"]
        assert state_a.keys() == state_b.keys() and state_a
        for pid, state in state_a.items():
            for key, value in state.items():
                assert torch.equal(value, state_b[pid][key]), f"{name}.{pid}.{key}"
        assert last_a[name]["param_groups"] == last_b[name]["param_groups"]


@pytest.fixture(scope="module")
def tokenizer(params, prepared, tmp_path_factory) -> Path:
    """A ts_pa tokenizer trained 2 steps (the second with masks)."""
    s = settings_on(params, prepared, "ts_pa", batch_size=2, iterations=2, mask_from=1,
                    checkpoint_every=2, log_every=1)
    run_dir = tmp_path_factory.mktemp("ts_pa")
    _, done = run(s, run_dir)
    assert done
    return run_dir / "final.pt"


def transformer_settings(params, prepared, tokenizer, variant="ilat_pa", **train):
    s = settings_on(params, prepared, variant, tokenizer, **train)
    s["eval"].update(n_pairs=3)
    return s


@pytest.fixture(scope="module")
def trained(params, prepared, tokenizer, tmp_path_factory) -> tuple[dict[str, Any], Path]:
    """ilat_pa trained 40 steps on the tokenizer: its settings and final.pt."""
    s = transformer_settings(params, prepared, tokenizer, batch_size=4, iterations=40,
                             warmup=4, lr=1e-3, checkpoint_every=40, log_every=4)
    run_dir = tmp_path_factory.mktemp("ilat_pa")
    _, done = run(s, run_dir)
    assert done
    return s, run_dir / "final.pt"


# --- tokenizer -------------------------------------------------------------------------------

def test_a_tokenizer_run_resumed_across_mask_from_equals_an_uninterrupted_one(
        params, prepared, tmp_path):
    s = settings_on(params, prepared, "ts_pa", batch_size=2, iterations=4, mask_from=2,
                    finetune_lr=4e-4, checkpoint_every=4, log_every=1)
    s["loss"]["disc_start"] = 1  # the GAN (and D's optimiser) from step 1: both resume too
    run(s, tmp_path / "straight")
    _, done = run(s, tmp_path / "resumed", stop_after=1)  # killed before mask_from
    assert not done
    _, done = run(s, tmp_path / "resumed")
    assert done
    assert_same_runs(tmp_path / "straight", tmp_path / "resumed", {"tokenizer", "discriminator"},
                     {"g", "d"})
    with open(tmp_path / "straight/log.csv") as f:
        lr = [float(r["lr_g"]) for r in csv.DictReader(f)]
    assert lr[:2] == [s["train"]["lr"]] * 2 and lr[2:] == [4e-4] * 2  # the restart at mask_from


def test_the_masked_phase_mixes_no_drawn_and_full_holes(params, prepared):
    s = settings_on(params, prepared, "ts_pa", batch_size=8, mask_from=3,
                    mask_mix=[0.25, 0.5, 0.25])
    task = build_task(s, CPU)
    before = task.batch(2, torch.Generator().manual_seed(1))
    assert "mask" not in before and before["image"].shape == (8, 3, 32, 32)
    for seed in range(3):
        batch = task.batch(3, torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        drawn = task.batches.draw(8, g)  # what batch() drew, then the mix
        assert torch.equal(batch["image"], drawn["target"])
        u = torch.rand(8, generator=g)
        for i in range(8):
            expected = (torch.zeros_like if u[i] < 0.25 else
                        (lambda m: m) if u[i] < 0.75 else torch.ones_like)(drawn["mask"][i])
            assert torch.equal(batch["mask"][i], expected), (seed, i)


# --- transformer -----------------------------------------------------------------------------

def test_a_transformer_run_resumed_equals_an_uninterrupted_one(params, prepared, tokenizer,
                                                               tmp_path):
    s = transformer_settings(params, prepared, tokenizer, batch_size=2, iterations=4, warmup=2,
                             checkpoint_every=4, log_every=1)
    assert s["model"]["transformer"]["dropout"] > 0  # the per-step torch seed matters
    run(s, tmp_path / "straight")
    _, done = run(s, tmp_path / "resumed", stop_after=2)
    assert not done
    _, done = run(s, tmp_path / "resumed")
    assert done
    assert_same_runs(tmp_path / "straight", tmp_path / "resumed", {"transformer"}, {"gpt"})


def reference_ce(logits: torch.Tensor, targets: torch.Tensor, counted: torch.Tensor) -> float:
    """Mean of -log p(target) over the counted (b, i), an explicit loop."""
    terms = [-torch.log_softmax(logits[b, i].double(), -1)[targets[b, i]]
             for b in range(targets.shape[0]) for i in range(targets.shape[1]) if counted[b, i]]
    return float(sum(terms) / len(terms))


def _step_batch(task, holes: dict[int, tuple[slice, slice]]) -> dict[str, torch.Tensor]:
    """A training batch whose pixel holes are only `holes` (row -> pixel region)."""
    batch = task.batch(0, torch.Generator().manual_seed(0))
    batch["mask"] = torch.zeros_like(batch["mask"])
    for b, (rows, cols) in holes.items():
        batch["mask"][b, 0, rows, cols] = 1
    return batch


def test_the_transformer_loss_counts_masked_tokens_only(params, prepared, tokenizer):
    s = transformer_settings(params, prepared, tokenizer, batch_size=4)
    s["model"]["transformer"].update(dropout=0.0, lm_rate=0.25)  # row 0 gets a full hole
    task = build_task(s, CPU)
    # Row 2: pixels 5-8 x 13-17, i.e. tokens (1, 3), (1, 4), (2, 3), (2, 4) of 4 x 4 pixels.
    batch = _step_batch(task, {2: (slice(5, 9), slice(13, 18))})
    enc, _ = task.tokens.encode(batch)
    counted = torch.zeros(4, GRID * GRID, dtype=torch.bool)
    counted[0] = True
    counted[2, [GRID + 3, GRID + 4, 2 * GRID + 3, 2 * GRID + 4]] = True
    assert torch.equal(enc["masked"] | counted, counted) and not enc["masked"][[1, 3]].any()
    with torch.no_grad():
        logits = task.transformer(enc["cond_ids"], enc["target_ids"], batch["pose"],
                                  la_mask(counted, task.n_cond))
    expected = reference_ce(logits, enc["target_ids"], counted)
    every = reference_ce(logits, enc["target_ids"], torch.ones_like(counted))
    assert abs(expected - every) > 1e-3  # the choice of tokens shows
    losses = task.train_step(0, batch)
    assert losses["ce"] == pytest.approx(expected, abs=1e-5)
    assert losses["masked_fraction"] == pytest.approx((64 + 4) / 256)


def test_taming_trains_on_every_token(params, prepared, tokenizer):
    s = transformer_settings(params, prepared, tokenizer, "taming_pa", batch_size=2)
    s["model"]["transformer"]["dropout"] = 0.0
    assert s["model"]["transformer"]["mask"] == "causal"
    task = build_task(s, CPU)
    batch = _step_batch(task, {})  # no hole at all
    enc, _ = task.tokens.encode(batch)
    assert not enc["masked"].any()
    with torch.no_grad():
        logits = task.transformer(enc["cond_ids"], enc["target_ids"], batch["pose"],
                                  causal_mask(task.n_cond, GRID * GRID).expand(2, -1, -1))
    expected = reference_ce(logits, enc["target_ids"], torch.ones(2, 64, dtype=torch.bool))
    losses = task.train_step(0, batch)
    assert losses["ce"] == pytest.approx(expected, abs=1e-5)
    assert losses["masked_fraction"] == 1.0


def held_out_ce(gpt: torch.nn.Module, tokens: Tokens, examples: list[data.Example],
                n_cond: int) -> float:
    """Eq. 6 on the test pairs (reference under its mask), eval mode."""
    batch = data.stack(examples)
    enc, _ = tokens.encode(batch)
    with torch.no_grad():
        logits = gpt.eval()(enc["cond_ids"], enc["target_ids"], batch["pose"],
                            la_mask(enc["masked"], n_cond))
    return float(token_loss(logits, enc["target_ids"], enc["masked"]))


def test_a_short_run_lowers_held_out_ce(trained):
    s, final = trained
    tokens, _ = Tokens.of_variant(s, CPU)
    examples = sampling.test_examples(s)
    torch.manual_seed(s["seed"])
    untrained = build_task(s, CPU)
    before = held_out_ce(untrained.transformer, tokens, examples, untrained.n_cond)
    gpt, _ = load_transformer(final, tokens, CPU)
    after = held_out_ce(gpt, tokens, examples, untrained.n_cond)
    assert before > 0.9 * math.log(s["model"]["tokenizer"]["n_codes"])  # near uniform at start
    assert after < 0.75 * before


# --- editing ---------------------------------------------------------------------------------

def editor(settings: dict[str, Any], final: Path, mask: str = "trained", cache: bool = True
           ) -> sampling.Editor:
    s = copy.deepcopy(settings)
    s["eval"].update(mask=mask, cache=cache)
    tokens, _ = Tokens.of_variant(s, CPU)
    gpt, ckpt = load_transformer(final, tokens, CPU)
    t = ckpt["settings"]["model"]["transformer"]
    return sampling.Editor(s, gpt, tokens, t["mask"], t["la_form"])


def test_an_empty_hole_is_the_reconstruction_without_sampling(trained, monkeypatch):
    s, final = trained
    edit = editor(s, final)
    ex = sampling.test_examples(s)[0]
    empty = dataclasses.replace(ex, mask=torch.zeros_like(ex.mask))

    def no_sampling(*args, **kwargs):
        raise AssertionError("an empty hole sampled")

    monkeypatch.setattr(sampling, "generate_tokens", no_sampling)
    out = edit(empty)
    image, steps = out.image, out.steps
    assert steps == 0
    tokenizer = edit.tokens.tokenizer
    with torch.no_grad():
        recon, enc = tokenizer(empty.target[None], empty.mask[None])  # Eq. 4 with M_q = 0
        codes = tokenizer.decode(enc.quantized)
    assert torch.allclose(image, recon, atol=1e-4)  # float noise of memory layouts
    assert (codes - recon).abs().max() > 1e-2  # decoding the codes instead would show


def test_a_full_hole_is_plain_autoregression(trained):
    s, final = trained
    ex = sampling.test_examples(s)[0]
    full = dataclasses.replace(ex, mask=torch.ones_like(ex.mask))
    out = editor(s, final)(full)
    image, steps = out.image, out.steps
    assert steps == GRID * GRID
    out = editor(s, final, mask="causal")(full)
    causal, causal_steps = out.image, out.steps
    assert causal_steps == GRID * GRID
    assert torch.allclose(image, causal, atol=1e-5)


def test_cached_and_uncached_editing_agree(trained):
    s, final = trained
    cached, uncached = editor(s, final, cache=True), editor(s, final, cache=False)
    assert cached.cache and not uncached.cache
    for ex in sampling.test_examples(s):
        masked = int(token_mask(ex.mask[None], GRID).sum())
        assert 0 < masked < GRID * GRID
        ea, eb = cached(ex), uncached(ex)
        a, steps_a, b, steps_b = ea.image, ea.steps, eb.image, eb.steps
        assert torch.equal(ea.ids, eb.ids)
        assert steps_a == steps_b == masked
        assert torch.allclose(a, b, atol=1e-5), ex.id


@pytest.mark.parametrize("mask", ["trained", "la"])
def test_taming_star_samples_only_the_masked_tokens(params, prepared, tokenizer, tmp_path,
                                                    mask):
    s = transformer_settings(params, prepared, tokenizer, "taming_pa", batch_size=2,
                             iterations=2, warmup=1, checkpoint_every=2, log_every=1)
    _, done = run(s, tmp_path / "taming")
    assert done
    s["eval"].update(mask=mask, n_pairs=2)
    out = tmp_path / "samples"
    sampling.sample(s, tmp_path / "taming/final.pt", out, CPU)
    with open(out / sampling.EXAMPLES_CSV) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        masked, tokens = int(row["masked_tokens"]), int(row["tokens"])
        assert tokens == GRID * GRID and 0 < masked < tokens
        assert int(row["steps"]) == (masked if mask == "la" else tokens)
        assert (out / row["output"]).is_file()
    sidecar = json.loads((out / "sampling.json").read_text())
    assert sidecar["mask"] == ("la" if mask == "la" else "causal")


def test_a_transformer_names_the_key_of_a_bad_tokenizer_or_vocabulary(params, prepared,
                                                                      trained, tmp_path):
    """A tokenizer of the wrong kind stops the transformer naming `uses.tokenizer`; a
    checkpoint trained on another vocabulary names `model.tokenizer.n_codes`."""
    s, final = trained
    sketch = copy.deepcopy(resolve(params, "ilat", "sketch_ffhq"))
    sketch["model"]["size"] = s["model"]["size"]
    torch.manual_seed(0)
    tok = build_tokenizer(dict(sketch["model"]["tokenizer"], size=sketch["model"]["size"]))
    path = tmp_path / "sketch.pt"
    checkpoint.save(path, step=0, modules={"tokenizer": tok}, optimizers={}, settings=sketch)
    bad = copy.deepcopy(s)
    bad["uses"] = {"tokenizer": {"variant": "sketch_ffhq", "checkpoint": str(path)}}
    with pytest.raises(ValueError, match=r"uses\.tokenizer: 'sketch_ffhq' encodes 1-channel"):
        Tokens.of_variant(bad, CPU)

    other = copy.deepcopy(checkpoint.load(s["uses"]["tokenizer"]["checkpoint"])["settings"])
    other["model"]["tokenizer"]["n_codes"] = 32
    tok = build_tokenizer(dict(other["model"]["tokenizer"], size=other["model"]["size"]))
    path = tmp_path / "small_vocabulary.pt"
    checkpoint.save(path, step=0, modules={"tokenizer": tok}, optimizers={}, settings=other)
    bad = copy.deepcopy(s)
    bad["uses"] = {"tokenizer": {"variant": "ts_pa", "checkpoint": str(path)}}
    tokens, _ = Tokens.of_variant(bad, CPU)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"vocabulary of 128 codes.*model\.tokenizer\.n_codes 32"):
        load_transformer(final, tokens, CPU)
