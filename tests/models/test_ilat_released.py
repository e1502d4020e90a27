"""iLAT released-weights converter (sparsegen.models.ilat.released).

The official state-dict layouts are written out here from the official module structure
(official_repos.md §3.2-3.3: plm_layers.Encoder + layers.Decoder of the TS-VQGAN, the sketch
VQGAN's sketch_layers.Encoder/Decoder, quantize.VectorQuantizer, transformer.GPT), independently
of the converter's name tables. Synthetic tensors in that layout are converted, and our networks
are compared with a plain-torch reading of the official forward (two-stream convs with the
official leak area, whole-map InstanceNorm, one-hot quantiser, explicit masked softmax)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sparsegen.config import load_params, resolve
from sparsegen.models.ilat import released
from sparsegen.models.ilat.transformer import GPT
from sparsegen.provenance import sha256_file
from sparsegen.released import ConversionError, convert_state

CPU = torch.device("cpu")
Layout = dict[str, tuple[int, ...]]

# Tiny official configurations: ch, ch_mult (widths ch * mult), num_res_blocks, z / embed_dim,
# n_embed; the GPT's n_embd, n_head, n_layer. Side 16 -> 4 x 4 tokens.
SIDE = 16
FACE = {"ch": 4, "ch_mult": [1, 2, 3], "blocks": 1, "z": 6, "n_embed": 16}
SKETCH = {"ch": 4, "ch_mult": [1, 2, 3], "blocks": 1, "z": 5, "n_embed": 16}  # one GPT vocab
GPT_SIZE = {"n_embd": 16, "n_head": 2, "n_layer": 2, "vocab": 16}
# The released configuration (configs/vqgan_ffhq.yml, transformer_ffhq.yml) at 256.
FACE_256 = {"ch": 64, "ch_mult": [1, 2, 4, 6, 8], "blocks": 2, "z": 256, "n_embed": 2048}
SKETCH_256 = dict(FACE_256)
GPT_256 = {"n_embd": 768, "n_head": 12, "n_layer": 12, "vocab": 2048}


# ---------------------------------------------------------------- official layouts (by hand)

def _conv(out: Layout, name: str, o: int, i: int, k: int) -> None:
    out[f"{name}.weight"], out[f"{name}.bias"] = (o, i, k, k), (o,)


def _resblock(out: Layout, name: str, i: int, o: int) -> None:
    _conv(out, f"{name}.conv1", o, i, 3)
    _conv(out, f"{name}.conv2", o, o, 3)
    if i != o:
        _conv(out, f"{name}.nin_shortcut", o, i, 1)


def _vq(out: Layout, z: int, n: int) -> None:
    out["quantize.embedding.weight"] = (n, z)
    _conv(out, "quant_conv", z, z, 1)
    _conv(out, "post_quant_conv", z, z, 1)


def face_layout(ch: int, ch_mult: list[int], blocks: int, z: int, n_embed: int) -> Layout:
    """VQCombineModel: plm_layers.Encoder + layers.Decoder (no attention), in_channels 3."""
    out: Layout = {}
    _conv(out, "encoder.conv_in", ch, 3, 3)
    in_mult = [1, *ch_mult]
    for lv, mult in enumerate(ch_mult):
        block_in = ch * in_mult[lv]
        for b in range(blocks):
            _resblock(out, f"encoder.down.{lv}.block.{b}", block_in, ch * mult)
            block_in = ch * mult
        if lv != len(ch_mult) - 1:
            _conv(out, f"encoder.down.{lv}.downsample.conv", block_in, block_in, 4)
    top = ch * ch_mult[-1]
    for m in (1, 2):
        _resblock(out, f"encoder.mid.block_{m}", top, top)
    _conv(out, "encoder.conv_out", z, top, 3)
    _vq(out, z, n_embed)
    _conv(out, "decoder.conv_in", top, z, 3)
    for m in (1, 2):
        _resblock(out, f"decoder.mid.block_{m}", top, top)
    block_in = top
    for lv in reversed(range(len(ch_mult))):
        for b in range(blocks + 1):
            _resblock(out, f"decoder.up.{lv}.block.{b}", block_in, ch * ch_mult[lv])
            block_in = ch * ch_mult[lv]
        if lv != 0:
            _conv(out, f"decoder.up.{lv}.upsample.conv", block_in, block_in, 3)
    _conv(out, "decoder.conv_out", 3, block_in, 3)
    return out


def sketch_layout(ch: int, ch_mult: list[int], blocks: int, z: int, n_embed: int) -> Layout:
    """SKVQModel: sketch_layers.Encoder/Decoder, 1 channel."""
    out: Layout = {}
    _conv(out, "encoder.conv_in.1", ch, 1, 13)
    for lv in range(len(ch_mult) - 1):
        i, o = ch * ch_mult[lv], ch * ch_mult[lv + 1]
        _conv(out, f"encoder.down.{lv}.downsample.conv", o, i, 4)
        for b in range(blocks):
            _resblock(out, f"encoder.down.{lv}.block.{b}", o, o)
    top = ch * ch_mult[-1]
    for m in (1, 2):
        _resblock(out, f"encoder.mid.block_{m}", top, top)
    _conv(out, "encoder.conv_out", z, top, 3)
    _vq(out, z, n_embed)
    _conv(out, "decoder.conv_in", top, z, 3)
    for m in (1, 2):
        _resblock(out, f"decoder.mid.block_{m}", top, top)
    block_in = top
    levels = len(ch_mult) - 1
    for i_level in range(1, len(ch_mult)):  # prepended: index levels - i_level
        idx, block_out = levels - i_level, ch * ch_mult[-i_level - 1]
        for b in range(blocks + 1):
            _resblock(out, f"decoder.up.{idx}.block.{b}", block_in, block_in)
        _conv(out, f"decoder.up.{idx}.upsample.conv", block_out, block_in, 3)
        block_in = block_out
    _conv(out, "decoder.conv_out", 1, block_in, 3)
    return out


def gpt_layout(n_embd: int, n_layer: int, vocab: int, sequence: int, **_: Any) -> Layout:
    """transformer.GPT with init_gpt_with_vqvae False (tied z_dec / c_dec listed too)."""
    out: Layout = {"z_sp": (1, n_embd), "c_sp": (1, n_embd), "z_bias": (vocab,),
                   "c_bias": (vocab,), "z_emb.weight": (vocab, n_embd),
                   "c_emb.weight": (vocab, n_embd), "pos_emb.weight": (sequence, n_embd),
                   "z_dec.weight": (vocab, n_embd), "c_dec.weight": (vocab, n_embd)}

    def linear(name: str, o: int, i: int) -> None:
        out[f"{name}.weight"], out[f"{name}.bias"] = (o, i), (o,)

    for b in range(n_layer):
        p = f"blocks.{b}"
        for ln in ("ln1", "ln2"):
            out[f"{p}.{ln}.weight"] = out[f"{p}.{ln}.bias"] = (n_embd,)
        for proj in ("key", "query", "value", "proj"):
            linear(f"{p}.attn.{proj}", n_embd, n_embd)
        linear(f"{p}.mlp.0", 4 * n_embd, n_embd)
        linear(f"{p}.mlp.2", n_embd, 4 * n_embd)
    for ln in ("dec.ln1", "dec.ln2"):
        out[f"{ln}.weight"] = out[f"{ln}.bias"] = (n_embd,)
    linear("dec.dense", n_embd, n_embd)
    return out


def synthetic(layout: Layout, seed: int, dtype: torch.dtype = torch.float64
              ) -> dict[str, torch.Tensor]:
    """Random tensors in `layout` (fan-in scaled), tied aliases equal to their embeddings."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(layout.items()):
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        scale = 1.0 / math.sqrt(fan_in) if name.endswith("weight") and len(shape) > 1 else 0.2
        t = torch.randn(shape, generator=gen, dtype=dtype) * scale
        if "ln" in name and name.endswith("weight"):
            t = 1 + t
        out[name] = t
    for alias, name in released.GPT_ALIASES.items():
        if alias in out:
            out[alias] = out[name].clone()
    return out


# ------------------------------------------------------- our settings for those configurations

def settings_for(face: dict, sketch: dict, gpt: dict, side: int) -> dict[str, Any]:
    """Resolved-style settings of a released variant at these official configurations."""
    widths = [face["ch"] * m for m in face["ch_mult"]]
    sk = [sketch["ch"] * m for m in sketch["ch_mult"]]
    return {
        "paper": "ilat", "variant": "released_test", "seed": 3, "released":
            list(released.OFFICIAL_FILES), "preset": "paper", "weights": "auto",
        "paths": {"weights": "unused"},
        "model": {
            "size": side, "joints": 0,
            "tokenizer": {"architecture": "face", "layout": "official", "init": "scratch",
                          "channels": 3, "widths": widths[:-1], "mid_width": widths[-1],
                          "mid_blocks": face["blocks"] + 2, "blocks": face["blocks"],
                          "decoder_blocks": face["blocks"] + 1, "attn_resolutions": [],
                          "z_channels": face["z"], "n_codes": face["n_embed"], "beta": 0.25,
                          "two_stream": True, "norm_stats": "whole", "compose": "official"},
            "condition_tokenizer": {
                "architecture": "sketch", "layout": "official", "init": "scratch",
                "channels": 1, "stem_width": sk[0], "widths": sk[1:], "mid_width": sk[-1],
                "mid_blocks": 2, "blocks": sketch["blocks"],
                "decoder_blocks": sketch["blocks"] + 1, "attn_resolutions": [],
                "z_channels": sketch["z"], "n_codes": sketch["n_embed"], "beta": 0.25,
                "two_stream": False, "norm_stats": "whole", "compose": "none"},
            "transformer": {"layers": gpt["n_layer"], "heads": gpt["n_head"],
                            "width": gpt["n_embd"], "dropout": 0.1, "pose_hidden": [64, 256],
                            "mask": "la", "la_form": "official", "lm_rate": 0.15}}}


def layouts(face: dict, sketch: dict, gpt: dict, side: int) -> dict[str, Layout]:
    grid = side >> (len(face["ch_mult"]) - 1)
    return {"tokenizer": face_layout(**face), "condition_tokenizer": sketch_layout(**sketch),
            "transformer": gpt_layout(**gpt, sequence=2 * (grid * grid + 1))}


@pytest.fixture(scope="module")
def small() -> dict[str, Any]:
    return settings_for(FACE, SKETCH, GPT_SIZE, SIDE)


@pytest.fixture(scope="module")
def official() -> dict[str, dict[str, torch.Tensor]]:
    return {m: synthetic(lay, seed) for seed, (m, lay) in
            enumerate(layouts(FACE, SKETCH, GPT_SIZE, SIDE).items())}


def converted(settings: dict[str, Any], official: dict[str, dict[str, torch.Tensor]]
              ) -> dict[str, torch.nn.Module]:
    """Our three networks in float64 holding the converted official tensors."""
    nets = released.build_networks(settings)
    for module, net in nets.items():
        net.double()
        params = official[module]
        if module == "transformer":
            params = released.drop_extras(params, net, "test")
        net.load_state_dict(convert_state(params, released.name_table(settings, module),
                                          net.state_dict(), "test"), strict=True)
        net.eval()
    return nets


@pytest.fixture(scope="module")
def nets(small, official) -> dict[str, torch.nn.Module]:
    return converted(small, official)


# -------------------------------------------------- the official forward, read in plain torch

def _c(t: dict, name: str, x: torch.Tensor, stride: int = 1, padding: int = 1) -> torch.Tensor:
    return F.conv2d(x, t[f"{name}.weight"], t[f"{name}.bias"], stride=stride, padding=padding)


def _plm(t: dict, name: str, x: torch.Tensor, mask: torch.Tensor | None, k: int = 3,
         stride: int = 1, padding: int = 1) -> torch.Tensor:
    """plm_conv: features without the hole where the kernel reaches it from outside."""
    full = _c(t, name, x, stride, padding)
    if mask is None:
        return full
    hidden = _c(t, name, x * (1 - mask), stride, padding)
    leak = (F.conv2d(mask, torch.ones(1, 1, k, k, dtype=x.dtype), stride=stride,
                     padding=padding) > 0).to(x.dtype)
    if stride > 1:
        mask = F.max_pool2d(mask, stride, stride)
    leak = (leak - mask).clamp(0, 1)
    return full * (1 - leak) + hidden * leak


def _swish_in(x: torch.Tensor) -> torch.Tensor:
    x = F.instance_norm(x, eps=1e-5)
    return x * torch.sigmoid(x)


def _res(t: dict, name: str, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    h = _plm(t, f"{name}.conv1", _swish_in(x), mask)
    h = _plm(t, f"{name}.conv2", _swish_in(h), mask)
    if f"{name}.nin_shortcut.weight" in t:
        x = _plm(t, f"{name}.nin_shortcut", x, mask, k=1, padding=0)
    return x + h


def official_quantize(t: dict, z: torch.Tensor, beta: float = 0.25
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VectorQuantizer: one-hot of the nearest code by explicit squared distance; loss
    mean((sg[zq] - z)^2) + beta mean((zq - sg[z])^2) (values only here)."""
    codes = t["quantize.embedding.weight"]
    flat = z.permute(0, 2, 3, 1).reshape(-1, codes.shape[1])
    dist = ((flat[:, None, :] - codes[None, :, :]) ** 2).sum(-1)
    ids = dist.argmin(1)
    one_hot = F.one_hot(ids, codes.shape[0]).to(codes.dtype)
    zq = (one_hot @ codes).reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    loss = ((zq - z) ** 2).mean() * (1 + beta)
    return zq, loss, ids.reshape(z.shape[0], z.shape[2], z.shape[3])


def official_face_encode(t: dict, x: torch.Tensor, mask: torch.Tensor | None, levels: int,
                         blocks: int) -> torch.Tensor:
    h = _plm(t, "encoder.conv_in", x, mask)
    for lv in range(levels):
        for b in range(blocks):
            h = _res(t, f"encoder.down.{lv}.block.{b}", h, mask)
        if lv != levels - 1:
            h = _plm(t, f"encoder.down.{lv}.downsample.conv", h, mask, k=4, stride=2)
        if mask is not None:
            step = mask.shape[2] // h.shape[2]
            mask = F.max_pool2d(mask, step, step)
    h = _res(t, "encoder.mid.block_1", h, mask)
    h = _res(t, "encoder.mid.block_2", h, mask)
    h = _plm(t, "encoder.conv_out", _swish_in(h), mask)
    return _c(t, "quant_conv", h, padding=0)


def official_face_decode(t: dict, zq: torch.Tensor, levels: int, blocks: int) -> torch.Tensor:
    h = _c(t, "decoder.conv_in", _c(t, "post_quant_conv", zq, padding=0))
    h = _res(t, "decoder.mid.block_2", _res(t, "decoder.mid.block_1", h))
    for lv in reversed(range(levels)):
        for b in range(blocks + 1):
            h = _res(t, f"decoder.up.{lv}.block.{b}", h)
        if lv != 0:
            h = _c(t, f"decoder.up.{lv}.upsample.conv", F.interpolate(h, scale_factor=2.0))
    return torch.tanh(_c(t, "decoder.conv_out", _swish_in(h)))


def official_sketch_encode(t: dict, x: torch.Tensor, levels: int, blocks: int) -> torch.Tensor:
    h = _c(t, "encoder.conv_in.1", F.pad(x, (6, 6, 6, 6), mode="reflect"), padding=0)
    for lv in range(levels - 1):
        h = _c(t, f"encoder.down.{lv}.downsample.conv", h, stride=2)
        for b in range(blocks):
            h = _res(t, f"encoder.down.{lv}.block.{b}", h)
    h = _res(t, "encoder.mid.block_2", _res(t, "encoder.mid.block_1", h))
    return _c(t, "quant_conv", _c(t, "encoder.conv_out", _swish_in(h)), padding=0)


def official_sketch_decode(t: dict, zq: torch.Tensor, levels: int, blocks: int) -> torch.Tensor:
    h = _c(t, "decoder.conv_in", _c(t, "post_quant_conv", zq, padding=0))
    h = _res(t, "decoder.mid.block_2", _res(t, "decoder.mid.block_1", h))
    for lv in reversed(range(levels - 1)):
        for b in range(blocks + 1):
            h = _res(t, f"decoder.up.{lv}.block.{b}", h)
        h = _c(t, f"decoder.up.{lv}.upsample.conv", F.interpolate(h, scale_factor=2.0))
    return torch.tanh(_c(t, "decoder.conv_out", _swish_in(h)))


def official_gpt(t: dict, c_idx: torch.Tensor, z_idx: torch.Tensor, mask: torch.Tensor,
                 n_head: int) -> torch.Tensor:
    """GPT.forward's logits_z (B, 1 + N, V): mask (B, L, L), 0 = -inf before the softmax."""
    def lin(name: str, x: torch.Tensor) -> torch.Tensor:
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    def ln(name: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], t[f"{name}.weight"], t[f"{name}.bias"])

    def gelu(x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))

    b = c_idx.shape[0]
    c = torch.cat([t["c_sp"].expand(b, 1, -1), t["c_emb.weight"][c_idx]], 1)
    z = torch.cat([t["z_sp"].expand(b, 1, -1), t["z_emb.weight"][z_idx]], 1)
    x = torch.cat([c, z], 1)
    x = x + t["pos_emb.weight"][: x.shape[1]]
    n, width = x.shape[1], x.shape[2]
    for i in range(len({k.split(".")[1] for k in t if k.startswith("blocks.")})):
        p = f"blocks.{i}"
        h = ln(f"{p}.ln1", x)
        q, k, v = (lin(f"{p}.attn.{w}", h).view(b, n, n_head, -1).transpose(1, 2)
                   for w in ("query", "key", "value"))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        att = att.masked_fill(mask[:, None] == 0, float("-inf")).softmax(-1)
        x = x + lin(f"{p}.attn.proj", (att @ v).transpose(1, 2).reshape(b, n, width))
        x = x + lin(f"{p}.mlp.2", gelu(lin(f"{p}.mlp.0", ln(f"{p}.ln2", x))))
    x = ln("dec.ln2", gelu(lin("dec.dense", ln("dec.ln1", x))))
    return x[:, c.shape[1]:] @ t["z_dec.weight"].T + t["z_bias"]


# ------------------------------------------------------------------------------------ tests

EXTRAS = {*released.GPT_ALIASES, released.CONDITION_BIAS}


@pytest.mark.parametrize("module", released.MODULES)
def test_every_official_tensor_is_used_once(small, official, module: str) -> None:
    table = released.name_table(small, module)
    ours = released.build_networks(small)[module].state_dict()
    assert {r.official for r in table} == set(official[module]) - EXTRAS
    assert {r.ours for r in table} == set(ours)
    assert len(table) == len(ours)


def test_released_256_configuration_maps_shape_for_shape() -> None:
    """The released configuration (ch 64 x [1, 2, 4, 6, 8], 2 blocks, 3 decoder blocks, 2048
    codes; GPT 12 x 768, 514 positions): every tensor maps, shapes equal (on the meta device)."""
    settings = settings_for(FACE_256, SKETCH_256, GPT_256, 256)
    assert released.settings_problems(settings) == []
    lay = layouts(FACE_256, SKETCH_256, GPT_256, 256)
    assert lay["transformer"]["pos_emb.weight"] == (514, 768)
    with torch.device("meta"):
        nets = released.build_networks(settings)
        for module, net in nets.items():
            params = {k: torch.empty(s) for k, s in lay[module].items()}
            assert released.check_layout(params, settings, module) == []
            if module == "transformer":  # the tied aliases and c_bias (no values on meta)
                params = {k: v for k, v in params.items() if k not in EXTRAS}
            state = convert_state(params, released.name_table(settings, module),
                                  net.state_dict(), "meta")
            assert len(state) == len(net.state_dict())
    assert [lv.resample is None for lv in nets["tokenizer"].decoder.levels] == [False] * 4 + [True]
    assert [len(lv.blocks) for lv in nets["tokenizer"].decoder.levels] == [3] * 5


def test_quantizer_matches_the_official_one(nets, official) -> None:
    t = official["tokenizer"]
    z = torch.randn(2, FACE["z"], 4, 4, dtype=torch.float64, generator=torch.Generator()
                    .manual_seed(5)) * 0.3
    zq, loss, ids = nets["tokenizer"].quantize(z)
    ref_zq, ref_loss, ref_ids = official_quantize(t, z)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(zq, ref_zq, rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    assert len(set(ids.flatten().tolist())) > 3  # several codes in play


@pytest.mark.parametrize("hole", [False, True])
def test_face_tokenizer_matches_the_official_forward(nets, official, hole: bool) -> None:
    t, tok = official["tokenizer"], nets["tokenizer"]
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, SIDE, SIDE, generator=gen, dtype=torch.float64) * 2 - 1
    mask = None
    if hole:
        mask = torch.zeros(2, 1, SIDE, SIDE, dtype=torch.float64)
        mask[0, :, 3:9, 5:12] = 1
        mask[1, :, 0:2, 10:16] = 1
    levels, blocks = len(FACE["ch_mult"]), FACE["blocks"]
    h = official_face_encode(t, x, mask, levels, blocks)
    ref_zq, _, ref_ids = official_quantize(t, h)
    enc = tok.encode(x, mask)
    torch.testing.assert_close(enc.features, h, rtol=0, atol=1e-10)
    assert torch.equal(enc.ids, ref_ids)
    image = tok.decode(tok.compose(enc))  # compose official: every code decoded
    torch.testing.assert_close(image, official_face_decode(t, ref_zq, levels, blocks),
                               rtol=0, atol=1e-10)


def test_sketch_tokenizer_matches_the_official_forward(nets, official) -> None:
    t, tok = official["condition_tokenizer"], nets["condition_tokenizer"]
    x = torch.rand(2, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(7),
                   dtype=torch.float64) * 2 - 1
    levels, blocks = len(SKETCH["ch_mult"]), SKETCH["blocks"]
    h = official_sketch_encode(t, x, levels, blocks)
    ref_zq, _, ref_ids = official_quantize(t, h)
    enc = tok.encode(x)
    torch.testing.assert_close(enc.features, h, rtol=0, atol=1e-10)
    assert torch.equal(enc.ids, ref_ids)
    torch.testing.assert_close(tok.decode(enc.quantized),
                               official_sketch_decode(t, ref_zq, levels, blocks),
                               rtol=0, atol=1e-10)


def test_gpt_matches_the_official_forward(nets, official) -> None:
    t, gpt = official["transformer"], nets["transformer"]
    assert isinstance(gpt, GPT) and gpt.sequence_length == t["pos_emb.weight"].shape[0]
    gen = torch.Generator().manual_seed(8)
    n, vocab = gpt.n_target, GPT_SIZE["vocab"]
    c_idx = torch.randint(vocab, (2, gpt.n_cond), generator=gen)
    z_idx = torch.randint(vocab, (2, n), generator=gen)
    length = gpt.sequence_length
    mask = (torch.rand(2, length, length, generator=gen) < 0.5) | torch.eye(length, dtype=bool)
    logits = gpt(c_idx, z_idx, None, mask)
    reference = official_gpt(t, c_idx, z_idx, mask.to(torch.float64), GPT_SIZE["n_head"])
    torch.testing.assert_close(logits, reference[:, :-1], rtol=0, atol=1e-10)


def test_stand_in_converts_back_bitwise(small) -> None:
    stand_in = released.stand_in(small)
    assert set(stand_in["transformer"]) == set(layouts(FACE, SKETCH, GPT_SIZE, SIDE)
                                               ["transformer"])
    for module, net in released.build_networks(small).items():
        params = stand_in[module]
        assert {k: tuple(v.shape) for k, v in params.items()} == \
            layouts(FACE, SKETCH, GPT_SIZE, SIDE)[module]
        if module == "transformer":
            params = released.drop_extras(params, net, "stand-in")
        state = convert_state(params, released.name_table(small, module), net.state_dict(),
                              "stand-in")
        assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize(("module", "fault", "name", "says"), [
    ("tokenizer", "drop", "decoder.up.1.upsample.conv.weight", "missing"),
    ("tokenizer", "extra", "encoder.mid.attn_1.q.weight", "no counterpart"),
    ("condition_tokenizer", "shape", "quantize.embedding.weight", "needs"),
    ("transformer", "alias", "z_dec.weight", "differs from z_emb.weight"),
    ("transformer", "shape", "c_bias", "one per condition code"),
])
def test_violations_name_the_file_and_the_tensor(small, official, module, fault, name,
                                                 says) -> None:
    params = dict(official[module])
    if fault == "drop":
        del params[name]
    elif fault == "extra":
        params[name] = torch.zeros(1)
    elif fault == "shape":
        params[name] = torch.zeros(3, *params[name].shape[1:], dtype=torch.float64)
    else:
        params[name] = params[name] + 1
    net = released.build_networks(small)[module].double()
    source = f"/weights/{module}.pth"
    with pytest.raises(ConversionError, match=says) as err:
        if module == "transformer":
            params = released.drop_extras(params, net, source)
        convert_state(params, released.name_table(small, module), net.state_dict(), source)
    assert source in str(err.value) and name in str(err.value)


def test_settings_that_are_not_the_official_networks_are_named(small) -> None:
    settings = copy.deepcopy(small)
    settings["model"]["tokenizer"].update(layout="paper", norm_stats="outside", mid_blocks=4)
    settings["model"]["transformer"]["la_form"] = "paper"
    problems = "\n".join(released.settings_problems(settings))
    for key in ("model.tokenizer.layout: 'paper'", "model.tokenizer.norm_stats: 'outside'",
                "model.tokenizer.mid_blocks: 4", "model.transformer.la_form: 'paper'"):
        assert key in problems
    assert len(released.settings_problems(settings)) == 4
    with pytest.raises(ConversionError,
                       match=r"(?s)ilat\.released_test: .*model\.tokenizer\.layout"):
        released.convert(settings, Path("unused.pt"), CPU)


def test_check_layout_names_our_keys(small) -> None:
    other = layouts({**FACE, "ch": 6}, {**SKETCH, "z": 7}, {**GPT_SIZE, "n_layer": 3}, SIDE)
    params = {m: {k: torch.empty(s) for k, s in lay.items()} for m, lay in other.items()}
    face = "\n".join(released.check_layout(params["tokenizer"], small, "tokenizer"))
    assert "model.tokenizer.widths: the checkpoint's value is [6, 12]" in face
    assert "model.tokenizer.mid_width" in face and "channels" not in face
    assert released.check_layout(params["condition_tokenizer"], small,
                                 "condition_tokenizer") == [
        "model.condition_tokenizer.z_channels: the checkpoint's value is 7, the settings give 5"]
    assert released.check_layout(params["transformer"], small, "transformer") == [
        "model.transformer.layers: the checkpoint's value is 3, the settings give 2"]


def test_read_official(tmp_path: Path, official) -> None:
    path = tmp_path / "tsvqgan.pth"
    state = {f"module.{k}": v for k, v in official["tokenizer"].items()}
    torch.save({"iteration": 300000, "g_model": state, "g_opt": {"state": {}}}, path)
    read, step = released.read_official(path, "ilat_ffhq_tsvqgan")
    assert step == 300000 and set(read) == set(official["tokenizer"])
    torch.save(official["transformer"], path)  # a bare state dict
    read, step = released.read_official(path, "ilat_ffhq_transformer")
    assert step is None and set(read) == set(official["transformer"])
    # torch 1.3.1 (the authors') writes the legacy format; AdamW state as the official save()
    opt = {"state": {0: {"step": 3, "exp_avg": torch.zeros(2)}}, "param_groups": [
        {"lr": 5e-5, "betas": (0.9, 0.95), "eps": 1e-6, "weight_decay": 0.01,
         "correct_bias": True, "params": [0]}]}
    torch.save({"iteration": 7, "model": official["transformer"], "opt": opt}, path,
               _use_new_zipfile_serialization=False)
    read, step = released.read_official(path, "ilat_ffhq_transformer")
    assert step == 7 and torch.equal(read["z_sp"], official["transformer"]["z_sp"])
    torch.save({"iteration": 5, "model": official["transformer"]}, path)
    with pytest.raises(ConversionError, match=rf"{path}: no 'g_model' state dict.*iteration"):
        released.read_official(path, "ilat_ffhq_sketch_vqgan")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match=rf"{path}: cannot read the released iLAT file"):
        released.read_official(path, "ilat_ffhq_tsvqgan")


def smoke_settings(tmp_path: Path, preset: str) -> dict[str, Any]:
    """The ilat_ffhq variant's resolved settings turned into a released one (the lead's
    params.yaml block gives the same)."""
    s = copy.deepcopy(resolve(load_params(overrides={"preset": preset}), "ilat", "ilat_ffhq",
                              check=False))
    s.pop("uses")
    s.update(variant="released_test", released=list(released.OFFICIAL_FILES), weights="auto",
             seed=3)
    s["paths"] = {**s["paths"], "weights": str(tmp_path / "weights")}
    s["model"] = copy.deepcopy(settings_for(FACE, SKETCH, GPT_SIZE, SIDE)["model"])
    return s


def test_convert_stand_in_end_to_end(tmp_path: Path) -> None:
    settings = smoke_settings(tmp_path, "smoke")
    out = tmp_path / "converted.pt"
    released.convert(settings, out, CPU)
    tokenizer, condition, gpt, ckpt = released.load_released(out, CPU)
    facts = ckpt["extra"]["released"]
    assert facts["stand_in"] and facts["step"] is None
    assert {s["kind"] for s in facts["sources"].values()} == {"stand-in"}
    assert ckpt["settings"]["model"]["condition_tokenizer"]["architecture"] == "sketch"
    seeded = released.build_networks(settings)
    for module, net in zip(released.MODULES, (tokenizer, condition, gpt), strict=True):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        reference = seeded[module].state_dict()
        assert all(torch.equal(v, reference[k]) for k, v in net.state_dict().items())


def test_convert_reads_the_official_files(tmp_path: Path) -> None:
    settings = smoke_settings(tmp_path, "paper")
    folder = Path(settings["paths"]["weights"])
    folder.mkdir()
    tensors = {m: synthetic(lay, seed, torch.float32) for seed, (m, lay) in
               enumerate(layouts(FACE, SKETCH, GPT_SIZE, SIDE).items())}
    paths = {}
    for name, (module, key) in released.OFFICIAL_FILES.items():
        paths[name] = folder / f"{name}.pth"
        torch.save({"iteration": 1000 + len(module), key: tensors[module]}, paths[name])
    out = tmp_path / "converted.pt"
    released.convert(settings, out, CPU)
    tokenizer, condition, gpt, ckpt = released.load_released(out, CPU)
    facts = ckpt["extra"]["released"]
    assert not facts["stand_in"] and facts["step"] == 1000 + len("transformer")
    assert facts["sources"]["ilat_ffhq_tsvqgan"]["sha256"] == sha256_file(
        paths["ilat_ffhq_tsvqgan"])
    torch.testing.assert_close(gpt.target_start, tensors["transformer"]["z_sp"][0])
    torch.testing.assert_close(condition.encoder.conv_in.weight,
                               tensors["condition_tokenizer"]["encoder.conv_in.1.weight"])
    assert torch.equal(tokenizer.decoder.levels[0].resample.weight,
                       tensors["tokenizer"]["decoder.up.2.upsample.conv.weight"])
    # one file missing: named, not silently replaced by a stand-in
    paths["ilat_ffhq_sketch_vqgan"].unlink()
    with pytest.raises(ConversionError, match=r"ilat_ffhq_sketch_vqgan\.pth"):
        released.convert(settings, tmp_path / "other.pt", CPU)
    # a file of another architecture: refused, naming the file and our key
    torch.save({"g_model": synthetic(sketch_layout(**{**SKETCH, "ch": 6}), 0)},
               paths["ilat_ffhq_sketch_vqgan"])
    with pytest.raises(ConversionError, match=r"sketch_vqgan\.pth: the checkpoint's "
                       r"architecture.*\n.*model\.condition_tokenizer\.widths"):
        released.convert(settings, tmp_path / "other.pt", CPU)
