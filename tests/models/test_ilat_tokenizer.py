"""iLAT's tokenizers (sparsegen.models.ilat.tokenizer, quantize, taming) on the CPU in float64
at tiny widths: the leak-free encoding (Sec. 3.1) for the face, pose and sketch networks and its
failure without each guard, the quantiser (Eq. 1, legacy loss, straight-through), Eq. 4, the
shapes, and taming's VQGAN state dict (layout written out here from taming's architecture)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from sparsegen.models.ilat.quantize import Quantizer
from sparsegen.models.ilat.taming import load_taming_state
from sparsegen.models.ilat.tokenizer import Tokenizer, build_tokenizer
from sparsegen.models.ilat.two_stream import MaskedAttention
from sparsegen.released import ConversionError


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    """Every test of this file in float64; the default restored after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)

BASE = {"channels": 3, "widths": [8, 16], "mid_width": 16, "mid_blocks": 2, "blocks": 1,
        "decoder_blocks": 1, "attn_resolutions": [8], "z_channels": 8, "n_codes": 64,
        "beta": 0.25, "two_stream": True, "norm_stats": "outside", "compose": "eq4",
        "size": 32}
ARCH = {"face": {"architecture": "face"},
        "pose": {"architecture": "pose", "widths": [8, 16, 16]},  # taming: attention at 8
        "sketch": {"architecture": "sketch", "channels": 1, "stem_width": 4}}


def _tokenizer(arch: str, **over: Any) -> Tokenizer:
    torch.manual_seed(0)
    return build_tokenizer({**BASE, **ARCH[arch], **over}).eval()


def _holes(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images with holes on the border and off the 4-pixel token grid: the top-right
    corner of one, the bottom-left of the other."""
    torch.manual_seed(1)
    x = torch.rand(2, channels, 32, 32) * 2 - 1
    m = torch.zeros(2, 1, 32, 32)
    m[0, 0, 0:10, 19:32] = 1
    m[1, 0, 23:32, 0:6] = 1
    return x, m


def _rewrite_hole(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(2)
    return torch.where(m > 0, torch.rand_like(x) * 2 - 1, x)


def _outside_change(tok: Tokenizer, channels: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Largest change of outside-hole token features when every hole pixel is rewritten, and
    the ids of both encodings at outside tokens."""
    x, m = _holes(channels)
    with torch.no_grad():
        a, b = tok.encode(x, m), tok.encode(_rewrite_hole(x, m), m)
    outside = a.token_mask[:, 0] == 0
    assert 0 < outside.sum() < outside.numel()
    diff = (a.features - b.features).abs().amax(1)[outside].max().item()
    return diff, a.ids[outside], b.ids[outside]


@pytest.mark.parametrize("arch", sorted(ARCH))
def test_hole_pixels_do_not_reach_outside_tokens(arch: str) -> None:
    tok = _tokenizer(arch)
    diff, ids_a, ids_b = _outside_change(tok, tok.encoder.conv_in.in_channels)
    assert diff < 1e-10
    assert torch.equal(ids_a, ids_b)


@pytest.mark.parametrize(("arch", "leak"), [
    ("face", "plain"), ("pose", "plain"), ("sketch", "plain"),
    ("face", "whole"), ("pose", "whole"), ("sketch", "whole"), ("pose", "open")])
def test_each_guard_is_needed(arch: str, leak: str) -> None:
    over = {"plain": {"two_stream": False}, "whole": {"norm_stats": "whole"}, "open": {}}[leak]
    tok = _tokenizer(arch, **over)
    if leak == "open":
        for module in tok.modules():
            if isinstance(module, MaskedAttention):
                module.keys = "all"
    diff, _, _ = _outside_change(tok, tok.encoder.conv_in.in_channels)
    assert diff > 1e-6


@pytest.mark.parametrize("arch", sorted(ARCH))
def test_a_pixel_outside_the_hole_changes_its_token(arch: str) -> None:
    tok = _tokenizer(arch)
    x, m = _holes(tok.encoder.conv_in.in_channels)
    y = x.clone()
    y[0, :, 30, 21] += 0.5                       # token (7, 5): outside the top-right hole
    with torch.no_grad():
        a, b = tok.encode(x, m), tok.encode(y, m)
    assert a.token_mask[0, 0, 7, 5] == 0
    assert (a.features[0, :, 7, 5] - b.features[0, :, 7, 5]).abs().max() > 1e-6


def test_quantizer_nearest_code_loss_and_straight_through() -> None:
    torch.manual_seed(3)
    q = Quantizer(n_codes=10, dim=4, beta=0.25)
    w = q.embedding.weight.detach().numpy()
    assert np.abs(w).max() <= 1 / 10 and np.abs(w).min() > 0        # U(-1/K, 1/K)
    z = (torch.randn(2, 4, 3, 3) * 0.1).requires_grad_()
    z_q, loss, ids = q(z)
    zn = z.detach().numpy()
    want_ids = np.array([[[min(range(10), key=lambda k: ((zn[b, :, i, j] - w[k]) ** 2).sum())
                           for j in range(3)] for i in range(3)] for b in range(2)])
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    codes = w[want_ids].transpose(0, 3, 1, 2)
    np.testing.assert_allclose(z_q.detach().numpy(), codes, rtol=0, atol=1e-15)
    sq = ((codes - zn) ** 2).mean()
    assert abs(loss.item() - (sq + 0.25 * sq)) < 1e-15               # legacy form, values
    weights = torch.randn_like(z)
    (z_q * weights).sum().backward()
    torch.testing.assert_close(z.grad, weights)                        # straight-through
    z.grad = None
    loss.backward()                                                    # commitment on z
    torch.testing.assert_close(z.grad, torch.from_numpy(2 * (zn - codes) / zn.size))
    grad_codes = np.zeros_like(w)                                      # beta on the codebook
    for b in range(2):
        for i in range(3):
            for j in range(3):
                grad_codes[want_ids[b, i, j]] += 0.25 * 2 * (codes[b, :, i, j] - zn[b, :, i, j])
    np.testing.assert_allclose(q.embedding.weight.grad.numpy(), grad_codes / zn.size,
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(q.embed(ids), torch.from_numpy(codes))


@pytest.mark.parametrize("compose", ["eq4", "none", "official"])
def test_compose_is_eq4(compose: str) -> None:
    tok = _tokenizer("face", compose=compose)
    x, m = _holes(3)
    with torch.no_grad():
        recon, enc = tok(x, m)
        plain = tok.encode(x)
    held = np.zeros((2, 1, 8, 8))                                      # M_q by hand
    for b in range(2):
        for i in range(8):
            for j in range(8):
                held[b, 0, i, j] = m[b, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4].max()
    np.testing.assert_array_equal(enc.token_mask.numpy(), held)
    mq = torch.from_numpy(held)
    want = enc.quantized * mq + enc.features * (1 - mq) if compose == "eq4" else enc.quantized
    torch.testing.assert_close(tok.compose(enc), want, rtol=0, atol=0)
    torch.testing.assert_close(recon, tok.decode(want))
    assert plain.token_mask is None
    torch.testing.assert_close(tok.compose(plain), plain.quantized)  # no mask: D(z_q)
    if compose == "eq4":
        assert not torch.allclose(recon, tok.decode(enc.quantized))


@pytest.mark.parametrize("arch", sorted(ARCH))
def test_shapes_and_range(arch: str) -> None:
    tok = _tokenizer(arch)
    channels = tok.encoder.conv_in.in_channels
    x, m = _holes(channels)
    recon, enc = tok(x, m)
    assert tok.grid == 8 and enc.features.shape == (2, 8, 8, 8)
    assert enc.ids.shape == (2, 8, 8) and enc.ids.dtype == torch.long
    assert recon.shape == x.shape and enc.codebook_loss.ndim == 0
    torch.testing.assert_close(tok.embed(enc.ids), enc.quantized)
    assert tok.last_layer is tok.decoder.conv_out.weight
    if arch != "pose":
        assert recon.abs().max() < 1                                   # tanh
    (recon.sum() + enc.codebook_loss).backward()
    assert tok.encoder.conv_in.weight.grad.abs().sum() > 0             # through the codes


def test_pose_at_64_has_attention_at_16() -> None:
    tok = build_tokenizer({**BASE, "architecture": "pose", "widths": [8, 8, 16],
                           "attn_resolutions": [16], "size": 64})
    sides = [64 >> i for i in range(3)]
    assert [len(lv.attns) > 0 for lv in tok.encoder.levels] == [s == 16 for s in sides]
    assert [len(lv.attns) > 0 for lv in tok.decoder.levels] == [s == 16 for s in sides[::-1]]
    recon, enc = tok(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert tok.grid == 16 and enc.ids.shape == (1, 16, 16) and recon.shape == (1, 3, 64, 64)


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("architecture", "cat", "tokenizer.architecture"), ("compose", "blend", "tokenizer.compose"),
    ("norm_stats", "some", "tokenizer.norm_stats"), ("size", 34, "tokenizer.size")])
def test_bad_settings_are_named(key: str, value: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build_tokenizer({**BASE, **ARCH["face"], key: value})


def test_missing_settings_and_bad_mask_are_named() -> None:
    with pytest.raises(ValueError, match="stem_width"):
        build_tokenizer({**BASE, "architecture": "sketch"})
    tok = _tokenizer("face")
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 16, 16\)"):
        tok.encode(torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 16, 16))


# ------------------------------------------------------------- taming's layout, by hand
def taming_layout(ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
                  resolution: int, in_channels: int, z_channels: int, n_embed: int
                  ) -> dict[str, tuple[int, ...]]:
    """name -> shape of taming's VQModel.state_dict() (taming/models/vqgan.py,
    taming/modules/diffusionmodules/model.py Encoder/Decoder, embed_dim = z_channels), with a
    few of the loss's tensors (LPIPS, discriminator)."""
    out: dict[str, tuple[int, ...]] = {}

    def conv(name: str, o: int, i: int, k: int) -> None:
        out.update({f"{name}.weight": (o, i, k, k), f"{name}.bias": (o,)})

    def norm(name: str, c: int) -> None:
        out.update({f"{name}.weight": (c,), f"{name}.bias": (c,)})

    def resnet(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cout, cin, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cout, cin, 1)

    def attn(name: str, c: int) -> None:
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(coder: str, c: int) -> None:
        resnet(f"{coder}.mid.block_1", c, c)
        attn(f"{coder}.mid.attn_1", c)
        resnet(f"{coder}.mid.block_2", c, c)

    levels, res = len(ch_mult), resolution
    conv("encoder.conv_in", ch, in_channels, 3)
    block_in = ch
    for i, mult in enumerate(ch_mult):
        for j in range(num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", block_in, ch * mult)
            block_in = ch * mult
            if res in attn_resolutions:
                attn(f"encoder.down.{i}.attn.{j}", block_in)
        if i != levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
            res //= 2
    mid("encoder", block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", z_channels, block_in, 3)
    conv("decoder.conv_in", block_in, z_channels, 3)
    mid("decoder", block_in)
    for i in reversed(range(levels)):
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", block_in, ch * ch_mult[i])
            block_in = ch * ch_mult[i]
            if res in attn_resolutions:
                attn(f"decoder.up.{i}.attn.{j}", block_in)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
            res *= 2
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", in_channels, block_in, 3)
    out["quantize.embedding.weight"] = (n_embed, z_channels)
    conv("quant_conv", z_channels, z_channels, 1)
    conv("post_quant_conv", z_channels, z_channels, 1)
    out["loss.logvar"] = ()
    conv("loss.discriminator.main.0", 8, in_channels, 4)
    conv("loss.perceptual_loss.net.slice1.0", 8, 3, 3)
    return out


POSE = {**BASE, "architecture": "pose", "widths": [8, 8, 16], "blocks": 2, "decoder_blocks": 3,
        "attn_resolutions": [8]}


def _taming_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(4)
    layout = taming_layout(8, [1, 1, 2], 2, [8], 32, 3, 8, 64)
    return {k: torch.randn(shape) for k, shape in layout.items()}


def test_taming_state_loads_onto_the_pose_tokenizer() -> None:
    state = _taming_state()
    tok = build_tokenizer(POSE)
    load_taming_state(tok, {"state_dict": state, "global_step": 1}, "vqgan_f16_16384.ckpt")
    ours = tok.state_dict()
    assert len(ours) == len([k for k in state if not k.startswith("loss.")])
    pairs = {  # one per naming rule
        "encoder.down.0.block.1.conv2.weight": "encoder.levels.0.blocks.1.conv2.weight",
        "encoder.down.2.attn.1.proj_out.bias": "encoder.levels.2.attns.1.proj_out.bias",
        "encoder.down.1.downsample.conv.weight": "encoder.levels.1.resample.weight",
        "encoder.mid.attn_1.q.weight": "encoder.mid.1.q.weight",
        "encoder.mid.block_2.norm1.bias": "encoder.mid.2.norm1.bias",
        "decoder.up.2.block.0.conv1.weight": "decoder.levels.0.blocks.0.conv1.weight",
        "decoder.up.2.attn.2.k.weight": "decoder.levels.0.attns.2.k.weight",
        "decoder.up.1.block.0.nin_shortcut.weight": "decoder.levels.1.blocks.0.nin_shortcut.weight",
        "decoder.up.1.upsample.conv.bias": "decoder.levels.1.resample.bias",
        "decoder.up.0.block.2.norm2.weight": "decoder.levels.2.blocks.2.norm2.weight",
        "decoder.mid.block_1.conv1.weight": "decoder.mid.0.conv1.weight",
        "decoder.conv_out.weight": "decoder.conv_out.weight",
        "quantize.embedding.weight": "quantize.embedding.weight",
        "quant_conv.weight": "quant_conv.weight", "post_quant_conv.bias": "post_quant_conv.bias"}
    for theirs, mine in pairs.items():
        assert torch.equal(ours[mine], state[theirs]), (theirs, mine)
    assert sorted(v.sum().item() for v in ours.values()) == sorted(
        v.sum().item() for k, v in state.items() if not k.startswith("loss."))
    recon, _ = tok(torch.rand(1, 3, 32, 32))
    assert recon.shape == (1, 3, 32, 32)


def test_taming_state_problems_name_the_tensor_and_file() -> None:
    tok = build_tokenizer(POSE)
    state = _taming_state()
    del state["encoder.mid.attn_1.v.bias"]
    with pytest.raises(ConversionError, match=r"(?s)vqgan\.ckpt.*encoder\.mid\.attn_1\.v\.bias"):
        load_taming_state(tok, state, "vqgan.ckpt")
    state = {**_taming_state(), "encoder.down.0.extra.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"(?s)vqgan\.ckpt.*encoder\.down\.0\.extra"):
        load_taming_state(tok, state, "vqgan.ckpt")
    state = _taming_state()
    state["quantize.embedding.weight"] = torch.zeros(16, 8)
    with pytest.raises(ConversionError, match=r"quantize\.embedding\.weight \(16, 8\)"):
        load_taming_state(tok, state, "vqgan.ckpt")
    with pytest.raises(ConversionError, match="pose tokenizer"):
        load_taming_state(_tokenizer("face"), _taming_state(), "vqgan.ckpt")
