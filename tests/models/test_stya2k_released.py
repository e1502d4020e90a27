"""StyA2K released weights: the official layout converts one-to-one onto our network, which then
computes what the official modules compute (checked against plain-torch references written
from the official facts, official_repos.md §2.2), and convert() writes a loadable checkpoint."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sparsegen import weights
from sparsegen.config import load_params, resolve
from sparsegen.models.stya2k import released
from sparsegen.models.stya2k.network import build_network
from sparsegen.models.stya2k.task import checkpointed_modules, load_checkpoint
from sparsegen.provenance import sha256_file
from sparsegen.released import ConversionError, convert_state

# ---------------------------------------------------------------- the official layout, by hand
# One official A2K module (networks.py A2K): two (1,) scalars, eight 1x1 convs C -> C.
A2K_CONVS = ("q", "k", "v", "q2", "k2", "v2", "fusion1", "fusion2")
# Official decoder convs: (module, Sequential index) -> (out, in) channels.
DECODER = {"decoder_layer_1.1": (256, 512), "decoder_layer_2.1": (256, 512),
           "decoder_layer_2.4": (256, 256), "decoder_layer_2.7": (256, 256),
           "decoder_layer_2.10": (128, 256), "decoder_layer_2.14": (128, 128),
           "decoder_layer_2.17": (64, 128), "decoder_layer_2.21": (64, 64),
           "decoder_layer_2.24": (3, 64)}
FILES = {"stya2k_a2k": "latest_net_A2K.pth", "stya2k_transform": "latest_net_transform.pth",
         "stya2k_decoder": "latest_net_decoder.pth"}
MODULE_OF = {"stya2k_a2k": "A2K", "stya2k_transform": "transform", "stya2k_decoder": "decoder"}


def _a2k_shapes(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}sim_alpha": (1,), f"{prefix}sim_beta": (1,)}
    for conv in A2K_CONVS:
        shapes[f"{prefix}{conv}.weight"] = (c, c, 1, 1)
        shapes[f"{prefix}{conv}.bias"] = (c,)
    return shapes


OFFICIAL_SHAPES: dict[str, tuple[int, ...]] = {
    **_a2k_shapes("A2K.", 256),
    **_a2k_shapes("transform.attn_adain_4_1.", 512),
    **_a2k_shapes("transform.attn_adain_5_1.", 512),
    "transform.merge_conv.weight": (512, 512, 3, 3), "transform.merge_conv.bias": (512,),
    **{f"decoder.{name}.{p}": ((o, i, 3, 3) if p == "weight" else (o,))
       for name, (o, i) in DECODER.items() for p in ("weight", "bias")},
}


def synthetic_official(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 tensors in the official layout (module-prefixed keys)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in OFFICIAL_SHAPES.items():
        if name.endswith("sim_alpha"):
            t = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith("sim_beta"):
            t = torch.rand(shape, generator=gen) - 0.5
        elif name.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=gen)
        else:  # fan-in scaled so activations keep their size through the decoder
            t = torch.randn(shape, generator=gen) * (2.0 / (shape[1] * shape[2] * shape[3])) ** .5
        out[name] = t
    return out


def save_official(tensors: dict[str, torch.Tensor], folder: Path, prefix: str = ""
                  ) -> dict[str, Path]:
    """The three files as the official save_networks writes them: one plain state dict each."""
    paths = {}
    for name, filename in FILES.items():
        module = MODULE_OF[name] + "."
        state = {prefix + k[len(module):]: v for k, v in tensors.items() if k.startswith(module)}
        paths[name] = folder / filename
        torch.save(state, paths[name])
    return paths


# ---------------------------------------------- plain-torch references from the official facts
def _norm(x: torch.Tensor) -> torch.Tensor:
    """Mean-variance norm: unbiased variance + 1e-5 per channel (official calc_mean_std)."""
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) / (x.var((2, 3), keepdim=True) + 1e-5).sqrt()


def _conv(t: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    w = t[f"{name}.weight"]
    if w.shape[-1] == 3:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(x, w, t[f"{name}.bias"])


def _blocks(x: torch.Tensor, region: int, heads: int = 8) -> torch.Tensor:
    """(b, C, H, W) -> (b, heads, C/heads, n, r): unfold order, channels split head-major."""
    b, c = x.shape[:2]
    u = F.unfold(x, region, stride=region)  # (b, C*r, n), channel-major
    n, r = u.shape[-1], region * region
    return u.view(b, c, r, n).transpose(2, 3).reshape(b, heads, c // heads, n, r)


def _unblocks(t: torch.Tensor, region: int, hw: tuple[int, int]) -> torch.Tensor:
    b, h, d, n, r = t.shape
    u = t.reshape(b, h * d, n, r).transpose(2, 3).reshape(b, h * d * r, n)
    return F.fold(u, hw, region, stride=region)


def official_a2k(t: dict[str, torch.Tensor], prefix: str, content: torch.Tensor,
                 style: torch.Tensor, region: int) -> torch.Tensor:
    """One official A2K module (official_repos.md §2.2), 8 heads, no 1/sqrt(d) scaling."""
    cn, sn = _norm(content), _norm(style)
    hw = tuple(content.shape[-2:])
    alpha, beta = t[prefix + "sim_alpha"], t[prefix + "sim_beta"]
    # Distributed attention, aggregated: per style block a centre key, weights
    # s_j = sigmoid(beta + alpha <k_centre, k_j>), summary (sum_j s_j k_j + centre) / (r + 1).
    q, k, v = (_blocks(_conv(t, prefix + n, x), region)
               for n, x in (("q", cn), ("k", sn), ("v", style)))
    r = q.shape[-1]
    kc, vc = k.mean(-1), v.mean(-1)                                    # (b, h, d, n)
    s = torch.sigmoid(beta + alpha * (kc[..., None] * k).sum(2))        # (b, h, n, r)
    k_hat = ((s[:, :, None] * k).sum(-1) + kc) / (r + 1)
    v_hat = ((s[:, :, None] * v).sum(-1) + vc) / (r + 1)
    logits = torch.einsum("bhdnr,bhdm->bhnrm", q, k_hat)               # every pixel, all blocks
    da = torch.einsum("bhnrm,bhdm->bhdnr", logits.softmax(-1), v_hat)
    # Progressive attention: block score summed over channels and aligned offsets, argmax
    # block gathered, then pixel attention over its r keys.
    q2, k2, v2 = (_blocks(_conv(t, prefix + n, x), region)
                  for n, x in (("q2", cn), ("k2", sn), ("v2", style)))
    best = torch.einsum("bhdnr,bhdmr->bhnm", q2, k2).argmax(-1)        # (b, h, n)
    pick = best[:, :, None, :, None].expand(-1, -1, k2.shape[2], -1, r)
    k_sel, v_sel = torch.gather(k2, 3, pick), torch.gather(v2, 3, pick)
    logits2 = torch.einsum("bhdnr,bhdns->bhnrs", q2, k_sel)
    pa = torch.einsum("bhnrs,bhdns->bhdnr", logits2.softmax(-1), v_sel)
    return (content + _conv(t, prefix + "fusion1", _unblocks(da, region, hw))
            + _conv(t, prefix + "fusion2", _unblocks(pa, region, hw)))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def official_stylised(t: dict[str, torch.Tensor], c: dict[str, torch.Tensor],
                      s: dict[str, torch.Tensor]) -> torch.Tensor:
    """Official transform (merge_conv without ReLU) + A2K skip + decoder, from the tensors."""
    skip = official_a2k(t, "A2K.", c["relu3_1"], s["relu3_1"], 8)
    f4 = official_a2k(t, "transform.attn_adain_4_1.", c["relu4_1"], s["relu4_1"], 8)
    f5 = official_a2k(t, "transform.attn_adain_5_1.", c["relu5_1"], s["relu5_1"], 4)
    x = _conv(t, "transform.merge_conv", f4 + _up(f5))
    x = _up(F.relu(_conv(t, "decoder.decoder_layer_1.1", x)))
    x = torch.cat([x, skip], 1)
    for i in (1, 4, 7, 10, "up", 14, 17, "up", 21):
        x = _up(x) if i == "up" else F.relu(_conv(t, f"decoder.decoder_layer_2.{i}", x))
    return _conv(t, "decoder.decoder_layer_2.24", x)


# ------------------------------------------------------------------------------------ fixtures
OFFICIAL_MODEL = {"da_form": "aggregated", "block_mode": "size", "heads": 8, "f5_relu": False,
                  "block_sizes": {"relu3_1": 8, "relu4_1": 8, "relu5_1": 4}}


def official_settings(preset: str, tmp_path: Path, mode: str) -> dict[str, Any]:
    params = load_params(overrides={"preset": preset})
    s = copy.deepcopy(resolve(params, "stya2k", "full"))
    s["model"] = {**s["model"], **OFFICIAL_MODEL,
                  "block_sizes": {**s["model"]["block_sizes"], **OFFICIAL_MODEL["block_sizes"]}}
    s["paths"] = {**s["paths"], "weights": str(tmp_path), "prepared": str(tmp_path / "prep")}
    s.update(weights=mode, device="cpu", released=list(FILES))
    return s


@pytest.fixture
def manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifest entries for the three files (no published hash: any file verifies)."""
    for name, filename in FILES.items():
        monkeypatch.setitem(weights.MANIFEST, name, weights.WeightSpec(
            name=name, filename=filename, url=f"https://example.invalid/{filename}",
            description=f"StyA2K {MODULE_OF[name]} (test)", licence="test",
            used_by=("stya2k released",)))


@pytest.fixture(scope="module")
def smoke_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return official_settings("smoke", tmp_path_factory.mktemp("w"), "random")


@pytest.fixture(scope="module")
def converted(smoke_settings):
    """Our network (float64) holding the synthetic official tensors, and those tensors."""
    official = synthetic_official()
    net = build_network(smoke_settings)
    state = convert_state(official, released.name_table(smoke_settings["model"]),
                          released._our_state(net), "synthetic")
    for m, module in checkpointed_modules(net).items():
        module.load_state_dict({k[len(m) + 1:]: v for k, v in state.items()
                                if k.startswith(m + ".")}, strict=True)
    return net.double().eval(), {k: v.double() for k, v in official.items()}


def _feats(b: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sizes = {"relu3_1": (256, 16), "relu4_1": (512, 8), "relu5_1": (512, 4)}
    return {layer: torch.randn(b, c, n, n, generator=gen, dtype=torch.float64).relu()
            for layer, (c, n) in sizes.items()}


# ------------------------------------------------------------------------------------- tests
def test_table_covers_the_official_layout_once(smoke_settings):
    table = released.name_table(smoke_settings["model"])
    assert len(OFFICIAL_SHAPES) == 74  # 3 x 18 (A2K modules) + 2 (merge_conv) + 18 (decoder)
    assert sorted(r.official for r in table) == sorted(OFFICIAL_SHAPES)
    net = build_network(smoke_settings)
    assert sorted(r.ours for r in table) == sorted(released._our_state(net))
    stand_in = released.stand_in(smoke_settings)
    assert {k: tuple(v.shape) for k, v in stand_in.items()} == OFFICIAL_SHAPES


@pytest.mark.parametrize(("prefix", "layer", "size", "region"),
                         [("A2K.", "relu3_1", 16, 8),
                          ("transform.attn_adain_4_1.", "relu4_1", 16, 8),
                          ("transform.attn_adain_5_1.", "relu5_1", 8, 4)])
def test_a2k_module_matches_official(converted, prefix, layer, size, region):
    net, official = converted
    gen = torch.Generator().manual_seed(2)
    c = net.transform[layer].da.q.in_channels
    content, style = (torch.randn(2, c, size, size, generator=gen, dtype=torch.float64).relu()
                      for _ in range(2))
    with torch.no_grad():
        ours = net.transform[layer](content, style)
    ref = official_a2k(official, prefix, content, style, region)
    assert (ref - content).abs().max() > 1e-2  # the attention branches contribute
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_f5_conv_has_no_relu(converted):
    net, official = converted
    x = torch.randn(1, 512, 4, 4, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    with torch.no_grad():
        ours = net.decoder.stage5(x)
    ref = _conv(official, "transform.merge_conv", x)
    assert (ref < 0).any()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_transfer_and_decoder_match_official(converted):
    net, official = converted
    content, style = _feats(seed=4), _feats(seed=5)
    with torch.no_grad():
        ours = net.decode(net.transfer(content, style))
    ref = official_stylised(official, content, style)
    assert ours.shape == (2, 3, 64, 64)  # relu3_1 is 1/4 of the image
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_stand_in_converts_back_bitwise(smoke_settings):
    seeded = build_network(smoke_settings).eval()
    official = released.stand_in(smoke_settings)
    other = build_network(smoke_settings).eval()
    with torch.no_grad():
        for p in list(other.transform.parameters()) + list(other.decoder.parameters()):
            p.add_(1.0)
    state = convert_state(official, released.name_table(smoke_settings["model"]),
                          released._our_state(other), "stand-in")
    for m, module in checkpointed_modules(other).items():
        module.load_state_dict({k[len(m) + 1:]: v for k, v in state.items()
                                if k.startswith(m + ".")}, strict=True)
    gen = torch.Generator().manual_seed(6)
    content, style = torch.rand(2, 3, 64, 64, generator=gen), torch.rand(2, 3, 64, 64,
                                                                         generator=gen)
    with torch.no_grad():
        assert torch.equal(seeded.stylize(content, style), other.stylize(content, style))


@pytest.mark.parametrize(("fault", "says"), [("extra", "no counterpart in our network"),
                                             ("missing", "official layout are missing"),
                                             ("shape", "needs (512, 512, 1, 1)")])
def test_every_official_tensor_used_once(smoke_settings, fault, says):
    official = synthetic_official()
    name = "transform.attn_adain_5_1.q2.weight"
    if fault == "extra":
        name = "transform.attn_adain_5_1.gamma"
        official[name] = torch.zeros(1)
    elif fault == "missing":
        del official[name]
    else:
        official[name] = torch.zeros(512, 512, 3, 3)
    net = build_network(smoke_settings)
    pattern = rf"(?s)^synthetic files: .*(?=.*{re.escape(says)})(?=.*{re.escape(name)})"
    with pytest.raises(ConversionError, match=pattern):
        convert_state(official, released.name_table(smoke_settings["model"]),
                      released._our_state(net), "synthetic files")


def test_settings_problems_name_the_keys(smoke_settings):
    assert released.settings_problems(smoke_settings) == []
    s = copy.deepcopy(smoke_settings)
    s["model"].update(f5_relu=True, da_form="dilated")
    problems = released.settings_problems(s)
    assert len(problems) == 2
    assert any(p.startswith("model.f5_relu: true,") and "(set false)" in p for p in problems)
    assert any(p.startswith("model.da_form: dilated,") and "(set aggregated)" in p
               for p in problems)
    with pytest.raises(ConversionError, match=r"(?s)official setting:(?=.*\n  - model\.f5_relu: "
                                              r"true)(?=.*\n  - model\.da_form: dilated)"):
        released.convert(s, Path("unused.pt"), torch.device("cpu"))


def test_read_official_strips_wrapper_and_names_bad_files(tmp_path):
    official = synthetic_official()
    paths = save_official(official, tmp_path, prefix="module.")
    read = released.read_official(paths)
    assert sorted(read) == sorted(official)
    assert all(torch.equal(read[k], official[k]) for k in official)
    paths["stya2k_decoder"].write_bytes(b"not a torch file")
    with pytest.raises(ConversionError, match=r"latest_net_decoder\.pth: unreadable"):
        released.read_official(paths)


def test_convert_stand_in_writes_a_loadable_checkpoint(tmp_path, manifest):
    s = official_settings("smoke", tmp_path, "random")
    out = tmp_path / "run" / "converted.pt"
    released.convert(s, out, torch.device("cpu"))
    net, ckpt = load_checkpoint(out, torch.device("cpu"))
    facts = ckpt["extra"]["released"]
    assert facts["stand_in"] is True and facts["step"] is None
    assert {n: f["kind"] for n, f in facts["sources"].items()} == dict.fromkeys(FILES, "stand-in")
    gen = torch.Generator().manual_seed(7)
    content, style = torch.rand(1, 3, 64, 64, generator=gen), torch.rand(1, 3, 64, 64,
                                                                         generator=gen)
    with torch.no_grad():
        assert torch.equal(net.stylize(content, style),
                           build_network(s).eval().stylize(content, style))


def test_convert_official_files(tmp_path, manifest):
    official = synthetic_official(seed=8)
    paths = save_official(official, tmp_path)
    s = official_settings("paper", tmp_path, "auto")
    out = tmp_path / "run" / "converted.pt"
    released.convert(s, out, torch.device("cpu"))
    net, ckpt = load_checkpoint(out, torch.device("cpu"))
    facts = ckpt["extra"]["released"]
    assert facts["stand_in"] is False
    for name, path in paths.items():
        assert facts["sources"][name] == {"kind": "file", "sha256": sha256_file(path),
                                          "url": f"https://example.invalid/{FILES[name]}"}
    assert torch.equal(net.transform["relu4_1"].pa.q.weight,
                       official["transform.attn_adain_4_1.q2.weight"])
    assert torch.equal(net.transform["relu5_1"].alpha.reshape(1),
                       official["transform.attn_adain_5_1.sim_alpha"])
    assert torch.equal(net.decoder.stage5[1].weight, official["transform.merge_conv.weight"])
    assert torch.equal(net.decoder.stage1[1][1].bias, official["decoder.decoder_layer_2.24.bias"])

    paths["stya2k_transform"].unlink()  # one file missing: no partial conversion
    with pytest.raises(ConversionError, match=r"missing: stya2k_transform"):
        released.convert(s, tmp_path / "again.pt", torch.device("cpu"))
