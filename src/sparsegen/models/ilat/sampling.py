"""Evaluation samples of an iLAT variant.

Tokenizers: every test image reconstructed plainly (`recon/`) and under its test mask through
the variant's decoding (`outputs/`: Eq. 4 for two-stream and iLAT* tokenizers, D(z_q) for the
plain VQGAN). Transformers: every test example edited (Sec. 3.3, 4): condition tokens, pose,
the target stream's known tokens, the masked tokens sampled top-1 in raster order (Eq. 5; the
KV cache when `eval.cache`), decoded by the tokenizer (Eq. 4 where it composes). An empty hole
is a reconstruction (no sampling); a full hole is plain autoregression. Taming (causal mask)
generates all target tokens from condition and pose; `eval.mask: la` samples a causal model
with the LA mask (Taming*, not retrained).

Output folder (`sparsegen.sampling.sample_folder`, renamed into place when done):
    outputs/<id>.png      the edited image (tokenizers: the masked reconstruction)
    recon/<id>.png        tokenizers: the plain reconstruction of the image
    inputs/<id>.png       the target stream (pose tasks: the reference; faces: the face)
    truths/<id>.png       what outputs are scored against (pose tasks: the target frame)
    masks/<id>.png        the hole (white)
    conditions/<id>.png   the condition (reference frame or edited sketch)
    examples.csv          id and those paths, masked token and pixel counts, AR steps, seconds,
                          sampled hole tokens equal to the truth's own (trained, untrained)
    untrained/outputs/    with `eval.untrained_reference`: the same edits by the transformer
                          initialised as training starts (same tokenizers)
    sampling.json         the checkpoint and its training recipe (+ stage, tokenizers)
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sparsegen.attention.local_autoregressive import token_mask
from sparsegen.data.images import to_uint8
from sparsegen.models.ilat import data
from sparsegen.models.ilat.generate import sample as generate_tokens
from sparsegen.models.ilat.released import load_released
from sparsegen.models.ilat.task import (
    Tokens,
    build_transformer,
    load_tokenizer,
    load_transformer,
)
from sparsegen.models.ilat.tokenizer import Encoded, Tokenizer
from sparsegen.provenance import device_description
from sparsegen.sampling import sample_folder
from sparsegen.train.checkpoint import load as load_checkpoint
from sparsegen.train.checkpoint import training_facts

EXAMPLES_CSV = "examples.csv"
UNTRAINED = "untrained"
OUTPUTS, RECON, INPUTS, TRUTHS, MASKS, CONDITIONS = ("outputs", "recon", "inputs", "truths",
                                                     "masks", "conditions")
COLUMNS = ("id", "output", "recon", "input", "truth", "mask", "condition", "masked_tokens",
           "tokens", "masked_pixels", "pixels", "steps", "seconds", "hole_matches",
           "untrained_hole_matches")


def picture(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] (C, H, W), C = 1 or 3 -> uint8 (H, W, 3)."""
    x = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return to_uint8(x.expand(3, -1, -1) if x.shape[0] == 1 else x)


def soft_blend_mask(mask: torch.Tensor) -> torch.Tensor:
    """The official demo's feathered mask (official_repos §3.3): the union of the hole
    max-pooled to 16, 32, 64 and 128 px, averaged, bilinearly back to the side."""
    side = mask.shape[-1]
    layers = [F.interpolate(F.adaptive_max_pool2d(mask, s), size=(side, side), mode="nearest")
              for s in (16, 32, 64, 128) if s <= side]
    soft = torch.stack(layers).mean(0) if layers else mask
    return torch.maximum(soft, mask)


def decode(tokenizer: Tokenizer, ids: torch.Tensor, enc: Encoded) -> torch.Tensor:
    """The image of (B, N) target ids: the tokenizer's composition (Eq. 4: sampled codes in
    masked tokens, the continuous features elsewhere; plain VQGAN: every code)."""
    grid = tokenizer.grid
    codes = tokenizer.embed(ids.view(-1, grid, grid))
    return tokenizer.decode(tokenizer.compose(Encoded(
        features=enc.features, quantized=codes, ids=ids.view(-1, grid, grid),
        codebook_loss=enc.codebook_loss, token_mask=enc.token_mask)))


class Editor:
    """A transformer variant's edit of one example: encode, sample, decode."""

    def __init__(self, settings: dict[str, Any], gpt: torch.nn.Module, tokens: Tokens,
                 trained_mask: str, la_form: str) -> None:
        self.settings, self.gpt, self.tokens = settings, gpt, tokens
        ev = settings["eval"]
        self.mask_kind = trained_mask if ev["mask"] == "trained" else ev["mask"]
        self.form = la_form
        # The official LA form is rebuilt after every sampled token: no exact KV cache exists.
        self.cache = bool(ev["cache"]) and not (self.mask_kind == "la" and la_form == "official")

    @torch.no_grad()
    def __call__(self, ex: data.Example) -> Edit:
        """The edit of one example (encode, sample, decode)."""
        tokens = self.tokens
        dev = tokens.device
        batch = data.stack([ex])
        enc_in, target = tokens.encode(batch)
        hole = enc_in["masked"]
        masked = torch.ones_like(hole) if self.mask_kind == "causal" else hole  # Taming: all
        pose = batch["pose"].to(dev) if "pose" in batch else None
        if not bool(masked.any()):  # an empty hole: the reconstruction, no sampling
            ids = enc_in["target_ids"]
            return Edit(decode(tokens.tokenizer, ids, target), 0, ids[0], hole[0])
        out = generate_tokens(self.gpt, enc_in["cond_ids"], pose, enc_in["target_ids"], masked,
                              self.mask_kind, cache=self.cache, form=self.form)
        image = decode(tokens.tokenizer, out.ids, target)
        if self.settings["eval"]["blend"] == "soft":
            soft = soft_blend_mask(batch["mask"].to(dev))
            image = image * soft + batch["target"].to(dev) * (1 - soft)
        return Edit(image, int(out.steps), out.ids[0], hole[0])

    @torch.no_grad()
    def hole_matches(self, ex: data.Example, edit: Edit) -> int:
        """Sampled hole tokens equal to the truth's own tokens (its plain encoding): how
        close the generated region is to the target, in the tokenizer's codes."""
        truth = self.tokens.tokenizer.encode(ex.truth[None].to(self.tokens.device)).ids
        return int((truth.flatten()[edit.hole] == edit.ids[edit.hole]).sum())


@dataclass(frozen=True)
class Edit:
    image: torch.Tensor   # (1, 3, H, W) in [-1, 1]
    steps: int            # autoregressive steps (transformer passes)
    ids: torch.Tensor     # (N,) target tokens after sampling
    hole: torch.Tensor    # (N,) Bool: the tokens the pixel hole masks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tokenizer_images(tokenizer: Tokenizer, examples: list[data.Example],
                      rows: list[dict[str, Any]], device: torch.device
                      ) -> Iterator[tuple[str, np.ndarray]]:
    channels = int(tokenizer.channels)
    with torch.inference_mode():
        for ex, row in zip(examples, rows, strict=True):
            start = time.perf_counter()
            image = ex.condition if channels == 1 and ex.condition.shape[0] == 1 else ex.target
            image = image[None].to(device)
            plain, _ = tokenizer(image, None)
            masked, _ = tokenizer(image, ex.mask[None].to(device))
            _sync(device)
            row["seconds"] = time.perf_counter() - start
            yield row["recon"], picture(plain[0])
            yield row["output"], picture(masked[0])
            yield row["truth"], picture(image[0])
            yield row["input"], picture(image[0])


def _edits(editor: Editor, examples: list[data.Example], rows: list[dict[str, Any]],
           device: torch.device, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
    for ex, row in zip(examples, rows, strict=True):
        _sync(device)
        start = time.perf_counter()
        edit = editor(ex)
        _sync(device)
        if not prefix:
            row["seconds"], row["steps"] = time.perf_counter() - start, edit.steps
            row["hole_matches"] = editor.hole_matches(ex, edit)
            yield row["truth"], picture(ex.truth)
            yield row["input"], picture(ex.target)
            yield row["condition"], picture(ex.condition)
        else:
            row["untrained_hole_matches"] = editor.hole_matches(ex, edit)
        yield prefix + row["output"], picture(edit.image[0])


def _row(ex: data.Example, grid: int) -> dict[str, Any]:
    masked = token_mask(ex.mask[None], grid)
    return {"id": ex.id, "output": f"{OUTPUTS}/{ex.id}.png", "recon": "",
            "input": f"{INPUTS}/{ex.id}.png", "truth": f"{TRUTHS}/{ex.id}.png",
            "mask": f"{MASKS}/{ex.id}.png", "condition": "",
            "masked_tokens": int(masked.sum()), "tokens": grid * grid,
            "masked_pixels": int(ex.mask.sum()), "pixels": int(ex.mask.numel()),
            "steps": 0, "seconds": 0.0, "hole_matches": "", "untrained_hole_matches": ""}


def test_examples(settings: dict[str, Any]) -> list[data.Example]:
    """The evaluated examples: test pairs / edits in id order, the first eval.n_pairs."""
    source = data.Examples(settings)
    rows = sorted(source.test_rows(), key=lambda r: r.id)
    n = settings["eval"]["n_pairs"]
    return [source.test_example(r) for r in (rows[:n] if n else rows)]


def _write_index(folder: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / EXAMPLES_CSV).write_text(buf.getvalue())


def sample(settings: dict[str, Any], checkpoint: Path, out_dir: Path, device: torch.device
           ) -> None:
    """Write the samples above for a tokenizer or transformer variant. The model's settings
    (side, joints) are the checkpoint's; the evaluation's are the job's."""
    if settings["stage"] == "tokenizer":
        tokenizer, ckpt = load_tokenizer(checkpoint, device)
        settings = {**settings, "model": ckpt["settings"]["model"]}
        examples = test_examples(settings)
        rows = [_row(ex, tokenizer.grid) | {"recon": f"{RECON}/{ex.id}.png"} for ex in examples]
        with sample_folder(out_dir, settings, checkpoint, ckpt) as folder:
            folder.write_images(_masks(examples, rows), len(rows), "masks")
            folder.write_images(_tokenizer_images(tokenizer, examples, rows, device),
                                4 * len(rows), "reconstruct")
            _finish(folder, settings, rows, device)
        return
    if settings.get("released"):  # the authors' three networks, converted together
        tokenizer, condition, gpt, ckpt = load_released(checkpoint, device)
        tokens, used = Tokens(tokenizer, condition, device), {}
    else:  # the model's settings (side, joints) are the checkpoint's
        trained = load_checkpoint(checkpoint)["settings"]["model"]
        tokens, used = Tokens.of_variant({**settings, "model": trained}, device)
        gpt, ckpt = load_transformer(checkpoint, tokens, device)
    settings = {**settings, "model": ckpt["settings"]["model"]}
    examples = test_examples(settings)
    trained = ckpt["settings"]["model"]["transformer"]
    editor = Editor(settings, gpt, tokens, trained["mask"], trained["la_form"])
    rows = [_row(ex, tokens.tokenizer.grid) | {"condition": f"{CONDITIONS}/{ex.id}.png"}
            for ex in examples]
    with sample_folder(out_dir, settings, checkpoint, ckpt) as folder:
        folder.write_images(_masks(examples, rows), len(rows), "masks")
        folder.write_images(_edits(editor, examples, rows, device, ""), 4 * len(rows), "edit")
        if settings["eval"].get("untrained_reference"):
            torch.manual_seed(int(ckpt["settings"]["seed"]))  # as training starts
            untrained = build_transformer(ckpt["settings"], tokens.tokenizer,
                                          tokens.condition).to(device).eval()
            folder.write_images(_edits(Editor(settings, untrained, tokens, editor.mask_kind,
                                              editor.form),
                                       examples, rows, device, f"{UNTRAINED}/"),
                                len(rows), "edit (untrained)")
        folder.sidecar["tokenizers"] = {
            role: {"variant": settings["uses"][role]["variant"], "training": training_facts(c)}
            for role, c in used.items()}
        folder.sidecar["mask"] = editor.mask_kind
        folder.sidecar["cache"] = editor.cache
        _finish(folder, settings, rows, device)


def _masks(examples: list[data.Example], rows: list[dict[str, Any]]
           ) -> Iterator[tuple[str, np.ndarray]]:
    for ex, row in zip(examples, rows, strict=True):
        yield row["mask"], picture(ex.mask * 2 - 1)


def _finish(folder: Any, settings: dict[str, Any], rows: list[dict[str, Any]],
            device: torch.device) -> None:
    folder.sidecar["stage"] = settings["stage"]
    folder.sidecar["joints"] = int(settings["model"]["joints"])
    folder.sidecar["device"] = device_description(device)
    _write_index(folder.path, rows)
