"""DynaST released weights: the official generator (`model.architecture: official`) and the
converter of the authors' `latest_net_G.pth` (sparsegen.models.dynast.released).

The official state-dict layout is written out here from the official module structure
(Huage001/DynaST generator.py, architecture.py, dynast_transformer.py; official_repos.md §1.2),
independently of the converter's name table; a synthetic state dict in that layout is converted
and our generator's image and 8 warps are compared with a plain-torch reading of the official
forward on the same tensors (official window unfold/fold inter-scale attention, replicate-padded
inner-scale candidates, inverted warp mask, BN running statistics, spectral norm from u, v)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from sparsegen import weights
from sparsegen.config import load_params, resolve
from sparsegen.models.dynast import released
from sparsegen.models.dynast.network import build_generator
from sparsegen.models.dynast.official import OfficialGenerator
from sparsegen.models.dynast.task import load_generator
from sparsegen.provenance import sha256_file
from sparsegen.released import ConversionError, convert_state

CPU = torch.device("cpu")
LABEL = 20                               # DeepFashion: RGB skeleton + 17 limb distance maps
OFFICIAL_MODEL = {"architecture": "official", "score_norm": "official",
                  "warp_mask": "inverted", "spade_norm": "positional"}
FILENAME = "dynast_deepfashion_latest_net_G.pth"


# ----------------------------------------------------------------- the official layout, by hand
def official_layout(ngf: int, size: int, n_layers: int = 2, label: int = LABEL
                    ) -> dict[str, tuple[int, ...]]:
    """name -> shape of DynaSTGenerator.state_dict() (max_multi 8, pos_dim = prune_dim =
    ngf / 4): spectral-normed convs store weight_orig / weight_u / weight_v, SyncBN its running
    statistics, and every ResidualBlock its PReLU twice (`relu` and `model.2`)."""
    out: dict[str, tuple[int, ...]] = {}
    widths = [ngf * 2 ** i for i in range(4)]
    pos = [w // 4 for w in widths]

    def conv(name: str, o: int, i: int, k: int) -> None:
        out.update({f"{name}.weight": (o, i, k, k), f"{name}.bias": (o,)})

    def sn_conv(name: str, o: int, i: int) -> None:
        out.update({f"{name}.weight_orig": (o, i, 3, 3), f"{name}.weight_u": (o,),
                    f"{name}.weight_v": (i * 9,), f"{name}.bias": (o,)})

    def residual(name: str, c: int) -> None:  # Sequential(conv, SyncBN, PReLU, conv, SyncBN)
        out[f"{name}.relu.weight"] = (1,)
        out[f"{name}.model.2.weight"] = (1,)
        for i in (0, 3):
            conv(f"{name}.model.{i}", c, c, 3)
        for i in (1, 4):
            out.update({f"{name}.model.{i}.{p}": (c,)
                        for p in ("weight", "bias", "running_mean", "running_var")})
            out[f"{name}.model.{i}.num_batches_tracked"] = ()

    def spade(name: str, c: int, ic: int) -> None:
        conv(f"{name}.mlp_shared.0", c, ic, 3)
        conv(f"{name}.mlp_gamma", c, c, 3)
        conv(f"{name}.mlp_beta", c, c, 3)

    def spade_res(name: str, c: int, ic: int) -> None:
        for i in (0, 1):
            sn_conv(f"{name}.conv_{i}", c, c)
            spade(f"{name}.norm_{i}", c, ic)
        out[f"{name}.relu.weight"] = (1,)

    for enc, ic in (("encoder_q", label), ("encoder_kv", label + 3)):
        for s, (i, o) in enumerate(zip([ic, *widths[:-1]], widths, strict=True), start=1):
            sn_conv(f"{enc}.layer{s}.0", o, i)        # layer{s}.1 is InstanceNorm2d: no state
            residual(f"{enc}.layer{s}.2", o)
    out["pos_embed"] = (1, pos[3], size // 8, size // 8)
    for n in (4, 3, 2, 1):
        c, p, qk = widths[n - 1], pos[n - 1], widths[n - 1] + pos[n - 1]
        spade_res(f"embed_q{n}", c, label)
        spade_res(f"embed_kv{n}", c, label + 3)
        for j in range(n_layers):
            t = f"transformer_{n}.{j}"
            conv(f"{t}.f", qk, qk, 1)
            conv(f"{t}.g", qk, qk, 1)
            conv(f"{t}.h", c, c, 1)
            conv(f"{t}.f_prune", p, qk, 1)
            conv(f"{t}.g_prune", p, qk, 1)
            spade(f"{t}.spade", c, label)
            residual(f"{t}.res_block", c)
        if n < 4:
            for d in ("decoder", "decoder_q", "decoder_kv"):
                conv(f"{d}_{n + 1}{n}.1" if d == "decoder" else f"{d}{n + 1}{n}.1",
                     c, widths[n], 3)
            conv(f"pos_{n + 1}{n}.1", p, pos[n], 3)
            spade_res(f"embed_{n}", c, label)
    conv("decoder_10.0", 3, ngf, 3)
    return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def synthetic(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """float64 values in the official layout: fan-in scaled convs (the query/key projections
    f, g smaller, so the T = 0.01 softmax keeps several links), spectral-norm u, v from power
    iteration on weight_orig (as training leaves them), SyncBN statistics of a trained net,
    the PReLU aliases equal to their `relu`."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64)

    for name, shape in layout.items():
        leaf = name.rsplit(".", 1)[-1]
        if name == "pos_embed":
            out[name] = randn(*shape)
        elif leaf == "num_batches_tracked":
            out[name] = torch.tensor(1000)
        elif leaf == "running_var":
            out[name] = 0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)
        elif leaf == "running_mean" or leaf == "bias":
            out[name] = 0.1 * randn(*shape)
        elif re.search(r"model\.[14]\.weight$", name):       # BN scale
            out[name] = 1 + 0.1 * randn(*shape)
        elif name.endswith("relu.weight") or name.endswith("model.2.weight"):
            continue                                         # PReLU: below, with its alias
        elif leaf in ("weight_u", "weight_v"):
            continue                                         # from weight_orig: below
        else:
            gain = 0.3 if re.search(r"\.(f|g)\.weight$", name) else 1.0
            out[name] = gain * randn(*shape) / (shape[1] * shape[2] * shape[3]) ** 0.5
    for name in layout:
        if name.endswith(".relu.weight"):
            out[name] = 0.25 + 0.05 * randn(1)
            alias = name.replace(".relu.weight", ".model.2.weight")
            if alias in layout:
                out[alias] = out[name].clone()
        elif name.endswith(".weight_orig"):
            w, v = out[name].flatten(1), _unit(randn(layout[name[:-5] + "_v"][0]))
            for _ in range(30):
                u = _unit(w @ v)
                v = _unit(w.T @ u)
            out[name[:-5] + "_u"], out[name[:-5] + "_v"] = u, v
    assert set(out) == set(layout)
    return out


# ------------------------------------------- plain-torch reading of the official forward pass
def _sn_weight(t: dict, p: str) -> torch.Tensor:
    w = t[f"{p}.weight_orig"]
    return w / torch.dot(t[f"{p}.weight_u"], w.flatten(1) @ t[f"{p}.weight_v"])


def _conv(t: dict, p: str, x: torch.Tensor, stride: int = 1, sn: bool = False) -> torch.Tensor:
    w = _sn_weight(t, p) if sn else t[f"{p}.weight"]
    if w.shape[-1] == 3:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(x, w, t[f"{p}.bias"], stride=stride)


def _bn(t: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    def c(name: str) -> torch.Tensor:
        return t[f"{p}.{name}"].view(1, -1, 1, 1)
    return (x - c("running_mean")) / (c("running_var") + 1e-5).sqrt() * c("weight") + c("bias")


def _prelu(t: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=0) + t[f"{p}.relu.weight"] * x.clamp(max=0)


def _residual(t: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    h = _prelu(t, p, _bn(t, f"{p}.model.1", _conv(t, f"{p}.model.0", x)))
    return _prelu(t, p, x + _bn(t, f"{p}.model.4", _conv(t, f"{p}.model.3", h)))


def _pono(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True) + 1e-8).sqrt()


def _spade(t: dict, p: str, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    seg = F.interpolate(seg, size=x.shape[-2:], mode="nearest")
    h = F.relu(_conv(t, f"{p}.mlp_shared.0", seg))
    return (1 + _conv(t, f"{p}.mlp_gamma", h)) * _pono(x) + _conv(t, f"{p}.mlp_beta", h)


def _spade_res(t: dict, p: str, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    dx = _conv(t, f"{p}.conv_0", _prelu(t, p, _spade(t, f"{p}.norm_0", x, seg)), sn=True)
    dx = _conv(t, f"{p}.conv_1", _prelu(t, p, _spade(t, f"{p}.norm_1", dx, seg)), sn=True)
    return _prelu(t, p, x + dx)


def _encoder(t: dict, p: str, x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for s in range(1, 5):
        x = F.instance_norm(_conv(t, f"{p}.layer{s}.0", x, stride=1 if s == 1 else 2, sn=True))
        x = _residual(t, f"{p}.layer{s}.2", x)
        out.append(x)
    return out


def _up(t: dict, p: str, x: torch.Tensor, slope: float) -> torch.Tensor:
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return F.leaky_relu(_conv(t, f"{p}.1", x), slope)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def _l2(x: torch.Tensor) -> torch.Tensor:
    """util.feature_normalize: x / (||x||_2 + 1e-10) over channels."""
    return x / (x.norm(dim=1, keepdim=True) + 1e-10)


def _dense(q, k, qp, kp, v, v2, top_k):
    """dynamic_attention: logits / sqrt(C_qk), mask sign(qp.kp / prune dim), warp softmax with
    the KEPT links filled with -1e4; next candidates: top-k of the logits."""
    b, c, h, w = q.shape
    cor = _tokens(q) @ k.flatten(2) / c ** 0.5
    mask = ((_tokens(qp) @ kp.flatten(2)) / kp.shape[1] > 0).to(q.dtype)
    masked = cor.softmax(-1) * mask
    out = (masked @ _tokens(v)).transpose(1, 2).reshape(b, -1, h, w)
    warp = (cor.masked_fill(mask.bool(), -1e4).softmax(-1) @ _tokens(v2))
    return (out, masked.sum(-1).view(b, 1, h, w), warp.transpose(1, 2).reshape(b, 3, h, w),
            cor.topk(top_k, -1).indices)


def _windows(x: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) -> (b, H/2 * W/2, 4, c): 2x2 windows (unfold order) of channel vectors."""
    b, c = x.shape[:2]
    return F.unfold(x, 2, stride=2).view(b, c, 4, -1).permute(0, 3, 2, 1)


def _unwindows(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    b, n, _, c = x.shape
    return F.fold(x.permute(0, 3, 2, 1).reshape(b, c * 4, n), hw, 2, stride=2)


def _inter(q, k, qp, kp, v, v2, prev, top_k):
    """inter_scale_dynamic_sparse_attention: each 2x2 query window attends to the 2x2 key
    windows of its coarse query's top-k (16 keys); logits / 0.01."""
    b, _, hq, wq = q.shape
    wk = k.shape[-1]

    def pick(x: torch.Tensor) -> torch.Tensor:    # (b, N, top_k * 4, c)
        win = _windows(x)
        return torch.stack([win[i, prev[i]] for i in range(b)]).flatten(2, 3)

    cor = torch.einsum("bnwc,bnjc->bnwj", _windows(q), pick(k)) / 0.01
    attn = cor.softmax(-1)
    mask = (torch.einsum("bnwc,bnjc->bnwj", _windows(qp), pick(kp)) > 0).to(q.dtype)
    masked = attn * mask
    out = _unwindows(torch.einsum("bnwj,bnjc->bnwc", masked, pick(v)), (hq, wq))
    conf = _unwindows(masked.sum(-1, keepdim=True), (hq, wq))
    warp = torch.einsum("bnwj,bnjc->bnwc", cor.masked_fill(mask.bool(), -1e4).softmax(-1),
                        pick(v2))
    y, x = prev // (wk // 2), prev % (wk // 2)
    children = torch.stack([2 * y * wk + 2 * x, 2 * y * wk + 2 * x + 1,
                            (2 * y + 1) * wk + 2 * x, (2 * y + 1) * wk + 2 * x + 1], -1)
    children = children.flatten(2)[:, :, None].expand(-1, -1, 4, -1)
    idx = children.gather(-1, attn.topk(top_k, -1).indices)          # (b, N, 4, top_k)
    idx = idx.view(b, hq // 2, wq // 2, 2, 2, top_k).permute(0, 1, 3, 2, 4, 5)
    return out, conf, _unwindows(warp, (hq, wq)), idx.reshape(b, hq * wq, top_k)


def _inner(q, k, qp, kp, v, v2, prev, top_k):
    """inner_scale_dynamic_sparse_attention: own top-k + the up / down / left / right
    neighbours' (replicate-padded index map) moved one pixel toward the query, clipped."""
    b, _, h, w = q.shape
    hk, wk = k.shape[-2:]
    grid = prev.view(b, h, w, top_k)
    padded = F.pad(grid.permute(0, 3, 1, 2).double(), (1, 1, 1, 1), mode="replicate")
    padded = padded.long().permute(0, 2, 3, 1)
    py, px = padded // wk, padded % wk
    cand = torch.cat([
        grid,
        (py[:, :-2, 1:-1] + 1).clamp(max=hk - 1) * wk + px[:, :-2, 1:-1],    # up, moved down
        (py[:, 2:, 1:-1] - 1).clamp(min=0) * wk + px[:, 2:, 1:-1],           # down, moved up
        py[:, 1:-1, :-2] * wk + (px[:, 1:-1, :-2] + 1).clamp(max=wk - 1),    # left, moved right
        py[:, 1:-1, 2:] * wk + (px[:, 1:-1, 2:] - 1).clamp(min=0),           # right, moved left
    ], -1).flatten(1, 2)

    def pick(x: torch.Tensor) -> torch.Tensor:    # (b, HW, 5 top_k, c)
        return torch.stack([_tokens(x)[i, cand[i]] for i in range(b)])

    cor = torch.einsum("bqc,bqjc->bqj", _tokens(q), pick(k)) / 0.01
    attn = cor.softmax(-1)
    mask = (torch.einsum("bqc,bqjc->bqj", _tokens(qp), pick(kp)) > 0).to(q.dtype)
    masked = attn * mask
    out = torch.einsum("bqj,bqjc->bqc", masked, pick(v)).transpose(1, 2).reshape(b, -1, h, w)
    warp = torch.einsum("bqj,bqjc->bqc", cor.masked_fill(mask.bool(), -1e4).softmax(-1),
                        pick(v2)).transpose(1, 2).reshape(b, 3, h, w)
    return (out, masked.sum(-1).view(b, 1, h, w), warp,
            cand.gather(-1, attn.topk(top_k, -1).indices))


def _block(t, p, attention, x, kv, pos, seg, prev, v2, top_k):
    """Dynamic(Sparse)TransformerBlock: L2-normalised features + positions, 1x1 projections,
    y = PONO(out + (1 - conf) SPADE(x) + x), ResidualBlock."""
    pos = pos.expand(x.shape[0], -1, -1, -1)
    query, key = torch.cat([_l2(x), pos], 1), torch.cat([_l2(kv), pos], 1)
    proj = (_conv(t, f"{p}.f", query), _conv(t, f"{p}.g", key), _conv(t, f"{p}.f_prune", query),
            _conv(t, f"{p}.g_prune", key), _conv(t, f"{p}.h", kv), v2)
    out, conf, warp, idx = (attention(*proj, top_k) if attention is _dense
                            else attention(*proj, prev, top_k))
    y = _pono(out + (1 - conf) * _spade(t, f"{p}.spade", x, seg) + x)
    return _residual(t, f"{p}.res_block", y), warp, idx, conf


def official_forward(t: dict, seg, ref_img, ref_seg, n_layers: int = 2, top_k: int = 4):
    """DynaSTGenerator.forward in training mode's warp branch (v2 = the pooled exemplar) with
    eval-mode BatchNorm: (image, 8 warps coarsest first, every block's confidence)."""
    ref_input = torch.cat([ref_img, ref_seg], 1)
    fq, fkv = _encoder(t, "encoder_q", seg), _encoder(t, "encoder_kv", ref_input)
    q = _spade_res(t, "embed_q4", fq[3], seg)
    kv = _spade_res(t, "embed_kv4", fkv[3], ref_input)
    pos, x, idx, warps, confs = t["pos_embed"], q, None, [], []
    for j in range(n_layers):
        x, warp, idx, conf = _block(t, f"transformer_4.{j}", _dense, x, kv, pos, seg, idx,
                                    F.avg_pool2d(ref_img, 8), top_k)
        warps.append(warp)
        confs.append(conf)
    for n in (3, 2, 1):
        x = _up(t, f"decoder_{n + 1}{n}", x, 0.0)
        q = _spade_res(t, f"embed_q{n}", _up(t, f"decoder_q{n + 1}{n}", q, 0.0) + fq[n - 1],
                       seg)
        kv = _spade_res(t, f"embed_kv{n}", _up(t, f"decoder_kv{n + 1}{n}", kv, 0.0)
                        + fkv[n - 1], ref_input)
        pos = _up(t, f"pos_{n + 1}{n}", pos, 0.01)
        xn = q
        for j in range(n_layers):
            xn, warp, idx, conf = _block(t, f"transformer_{n}.{j}", _inter if j == 0 else _inner,
                                         xn, kv, pos, seg, idx, F.avg_pool2d(ref_img, 2 ** (n - 1)),
                                         top_k)
            warps.append(warp)
            confs.append(conf)
        x = _spade_res(t, "embed_q1" if n == 1 else f"embed_{n}", x + xn, seg)  # embed_1 unused
    return torch.tanh(_conv(t, "decoder_10.0", x)), warps, confs


# ------------------------------------------------------------------------------------ fixtures
def official_model(preset: str) -> dict[str, Any]:
    params = load_params(overrides={"preset": preset})
    return {**resolve(params, "dynast", "df_full", check=False)["model"], **OFFICIAL_MODEL}


@pytest.fixture(scope="module")
def smoke_model() -> dict[str, Any]:
    return official_model("smoke")


@pytest.fixture(scope="module")
def layout(smoke_model) -> dict[str, tuple[int, ...]]:
    return official_layout(smoke_model["widths"][0], smoke_model["size"])


def inputs(model: dict[str, Any], batch: int = 2, seed: int = 1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    n = model["size"]
    seg, ref_seg = (torch.rand(batch, LABEL, n, n, generator=gen, dtype=dtype) for _ in range(2))
    return seg, torch.rand(batch, 3, n, n, generator=gen, dtype=dtype) * 2 - 1, ref_seg


def load_official(model: dict[str, Any], official: dict[str, torch.Tensor]) -> OfficialGenerator:
    """Our generator (float64, eval) holding `official` through the converter's table."""
    net = OfficialGenerator(model).double().eval()
    params, n_aliases = released.drop_aliases(official, model, "synthetic")
    assert n_aliases == 16  # 8 encoder stages + 4 levels x 2 blocks
    state = convert_state(params, released.name_table(model), net.state_dict(), "synthetic")
    net.load_state_dict(state, strict=True)
    return net


def settings(preset: str, tmp_path: Path, mode: str) -> dict[str, Any]:
    """Converter settings with the smoke-size official model (also under the paper preset, so
    the file path runs at a small size)."""
    s = copy.deepcopy(resolve(load_params(overrides={"preset": "smoke"}), "dynast", "df_full"))
    s["model"].update(OFFICIAL_MODEL)
    s["paths"] = {**s["paths"], "weights": str(tmp_path), "prepared": str(tmp_path / "prep")}
    s.update(preset=preset, weights=mode, device="cpu", released=["dynast_deepfashion"],
             variant="df_released")
    return s


@pytest.fixture
def manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest entry without a published hash (any file verifies)."""
    monkeypatch.setitem(weights.MANIFEST, "dynast_deepfashion", weights.WeightSpec(
        name="dynast_deepfashion", filename=FILENAME, url=f"https://example.invalid/{FILENAME}",
        description="DynaST DeepFashion generator (test)", licence="test",
        used_by=("dynast released",)))


# ------------------------------------------------------------------------------------- tests
def official_parameter_count(ngf: int, size: int, n_layers: int = 2, label: int = LABEL) -> int:
    """Parameters of DynaSTGenerator from its layer list (spectral norm: weight_orig; the
    ResidualBlock's PReLU counted once; InstanceNorm has none)."""
    def conv(i: int, o: int, k: int) -> int:
        return o * i * k * k + o

    def residual(c: int) -> int:        # 2 conv 3x3 + 2 BN (weight, bias) + 1 PReLU
        return 2 * conv(c, c, 3) + 2 * 2 * c + 1

    def spade(c: int, ic: int) -> int:  # mlp_shared ic -> c, mlp_gamma, mlp_beta c -> c
        return conv(ic, c, 3) + 2 * conv(c, c, 3)

    def spade_res(c: int, ic: int) -> int:   # 2 SN conv + 2 SPADE + 1 PReLU
        return 2 * conv(c, c, 3) + 2 * spade(c, ic) + 1

    def block(c: int, p: int, ic: int) -> int:  # f, g (c+p)²; h c²; f_prune, g_prune -> p
        return (2 * conv(c + p, c + p, 1) + conv(c, c, 1) + 2 * conv(c + p, p, 1)
                + spade(c, ic) + residual(c))

    w = [ngf * 2 ** i for i in range(4)]
    p = [x // 4 for x in w]
    total = sum(conv(i, o, 3) + residual(o)                      # the two FeatureGenerators
                for ic in (label, label + 3) for i, o in zip([ic, *w[:-1]], w, strict=True))
    total += p[3] * (size // 8) ** 2                              # pos_embed
    total += sum(conv(p[i + 1], p[i], 3) for i in range(3))       # pos_43, pos_32, pos_21
    total += sum(spade_res(w[i], label) + spade_res(w[i], label + 3)   # embed_q{n}, embed_kv{n}
                 + n_layers * block(w[i], p[i], label) for i in range(4))
    total += sum(spade_res(w[i], label) for i in range(3))        # embed_3, embed_2, embed_1
    total += 3 * sum(conv(w[i + 1], w[i], 3) for i in range(3))   # decoder_, _q, _kv steps
    return total + conv(ngf, 3, 3)                                # decoder_10


def test_parameter_count_matches_the_official_layer_list(smoke_model):
    # Paper size (ngf 64, 256², n_layers 2, 20 label channels), by part:
    #   encoders 7,833,412 (q) + 7,835,140 (kv); pos_embed 128*32*32 = 131,072 + steps 96,880;
    #   levels (embed_q + embed_kv + 2 blocks): 244,737 + 248,193 + 2*179,265 (64),
    #   931,841 + 938,753 + 2*692,353 (128), 3,633,153 + 3,646,977 + 2*2,720,001 (256),
    #   14,344,193 + 14,371,841 + 2*10,781,185 (512); embed_3/2/1 3,633,153 + 931,841 + 244,737;
    #   decoder steps 3*(73,792 + 295,040 + 1,179,904); decoder_10 1,731.
    assert official_parameter_count(64, 256) == 92_459_470
    with torch.device("meta"):  # shapes only: the 92M-parameter network is not allocated
        paper = build_generator(official_model("paper"))
    assert isinstance(paper, OfficialGenerator)
    assert sum(p.numel() for p in paper.parameters()) == 92_459_470
    small = OfficialGenerator(smoke_model)
    assert sum(p.numel() for p in small.parameters()) == official_parameter_count(8, 32)


def test_layout_is_the_name_table_plus_aliases(smoke_model, layout):
    # per ResidualBlock 16 tensors, SN conv 4, SPADE 6, SPADEResnetBlock 21: encoders 2*4*(4+16),
    # pos_embed 1, levels 4*(2*21 + 2*(5*2 + 6 + 16)), steps 3*(4*2 + 21), decoder_10 2.
    assert len(layout) == 160 + 1 + 424 + 87 + 2 == 674
    table = released.name_table(smoke_model)
    assert sorted([r.official for r in table] + list(released.aliases(smoke_model))) \
        == sorted(layout)
    ours = OfficialGenerator(smoke_model).state_dict()
    assert sorted(r.ours for r in table) == sorted(ours)
    stand_in = released.stand_in(smoke_model, seed=0)
    assert {k: tuple(v.shape) for k, v in stand_in.items()} == layout


def test_forward_matches_the_official_computation(smoke_model, layout):
    official = synthetic(layout)
    net = load_official(smoke_model, official)
    seg, ref_img, ref_seg = inputs(smoke_model)
    with torch.no_grad():
        out = net(seg, ref_img, ref_seg)
        image, warps, confs = official_forward(official, seg, ref_img, ref_seg)
    assert [f"{m.name}:{m.mode}" for m in out.matches] == [
        "4-B1:dense", "4-B2:dense", "8-B1:inter", "8-B2:inner", "16-B1:inter", "16-B2:inner",
        "32-B1:inter", "32-B2:inner"]
    conf = torch.cat([c.flatten() for c in confs])
    assert 0.05 < conf.mean() < 0.95  # pruning keeps some links and drops others
    assert image.std() > 0.05
    torch.testing.assert_close(out.image, image, rtol=1e-9, atol=1e-9)
    assert len(out.warps) == len(warps) == 8
    for ours, theirs in zip(out.warps, warps, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
    for m, c in zip(out.matches, confs, strict=True):
        torch.testing.assert_close(m.match.conf, c, rtol=1e-9, atol=1e-9)


def test_smoke_forward_gives_eight_warps_and_finite_images(smoke_model):
    torch.manual_seed(0)
    net = build_generator(smoke_model)
    seg, ref_img, ref_seg = inputs(smoke_model, dtype=torch.float32)
    out = net(seg, ref_img, ref_seg)
    assert out.image.shape == (2, 3, 32, 32) and torch.isfinite(out.image).all()
    assert out.image.abs().max() <= 1
    assert [w.shape[-1] for w in out.warps] == [4, 4, 8, 8, 16, 16, 32, 32]  # 2 per level
    assert all(torch.isfinite(w).all() for w in out.warps)
    assert net.attended == [3, 2, 1, 0]
    assert [[b.mode for b in net.blocks[str(lv)]] for lv in net.attended] == [
        ["dense", "dense"], ["inter", "inner"], ["inter", "inner"], ["inter", "inner"]]
    out.image.mean().backward()  # trainable end to end
    assert net.embed_q[0].conv_0.parametrizations.weight.original.grad is not None
    assert net.fuse[0].conv_0.parametrizations.weight.original.grad is None  # embed_1: dead


def test_warp_softmax_runs_over_the_pruned_links(smoke_model):
    """warp_mask inverted: the first dense block's warp is softmax of the logits with the kept
    links filled with -1e4 (the official masked_fill), not Eq. 12's softmax over kept links."""
    torch.manual_seed(0)
    net = OfficialGenerator(smoke_model).double().eval()
    block = net.blocks["3"][0]
    gen = torch.Generator().manual_seed(3)
    x, ref = (torch.randn(1, 64, 4, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    pos = torch.randn(1, 16, 4, 4, generator=gen, dtype=torch.float64)
    image = torch.rand(1, 3, 4, 4, generator=gen, dtype=torch.float64)
    seg = torch.rand(1, LABEL, 32, 32, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        _, match = block(x, ref, pos, seg, None, image)
        query, key = torch.cat([_l2(x), pos], 1), torch.cat([_l2(ref), pos], 1)
        cor = _tokens(block.alpha(query)) @ block.beta(key).flatten(2) / 80 ** 0.5
        kept = (_tokens(block.omega(query)) @ block.phi(key).flatten(2)) > 0
        inverted = cor.masked_fill(kept, -1e4).softmax(-1) @ _tokens(image)
        paper = cor.exp() * kept / ((cor.exp() * kept).sum(-1, keepdim=True) + 1e-8)
    assert 0 < kept.sum() < kept.numel()
    torch.testing.assert_close(_tokens(match.warp), inverted, rtol=1e-10, atol=1e-12)
    assert (_tokens(match.warp) - paper @ _tokens(image)).abs().max() > 1e-2


def test_official_spectral_norm_state_loads_into_the_parametrization():
    """torch.nn.utils.spectral_norm (the official code's) stores weight_orig, weight_u,
    weight_v; our parametrized conv holds the same tensors and gives the same eval output."""
    torch.manual_seed(0)
    old = nn.utils.spectral_norm(nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"))
    for _ in range(3):  # training forwards move u, v by power iteration
        old(torch.randn(1, 4, 5, 5))
    state = old.state_dict()
    assert sorted(state) == ["bias", "weight_orig", "weight_u", "weight_v"]
    new = spectral_norm(nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"))
    new.load_state_dict({released.SN_PARTS[k]: v for k, v in state.items()}, strict=True)
    old.eval()
    new.eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(new(x), old(x), rtol=1e-6, atol=1e-6)


def test_stand_in_converts_back_bitwise(smoke_model):
    torch.manual_seed(0)
    seeded = OfficialGenerator(smoke_model).eval()
    official = released.stand_in(smoke_model, seed=0)
    other = OfficialGenerator(smoke_model).eval()
    params, _ = released.drop_aliases(official, smoke_model, "stand-in")
    other.load_state_dict(convert_state(params, released.name_table(smoke_model),
                                        other.state_dict(), "stand-in"), strict=True)
    seg, ref_img, ref_seg = inputs(smoke_model, dtype=torch.float32)
    with torch.no_grad():
        a, b = seeded(seg, ref_img, ref_seg), other(seg, ref_img, ref_seg)
    assert torch.equal(a.image, b.image)
    assert all(torch.equal(x, y) for x, y in zip(a.warps, b.warps, strict=True))


@pytest.mark.parametrize(("fault", "name", "says"), [
    ("extra", "transformer_1.0.gamma", "no counterpart in our network"),
    ("missing", "transformer_2.1.g_prune.weight", "official layout are missing"),
    ("shape", "embed_kv3.conv_1.weight_v", "needs (288,)"),
    ("alias", "encoder_kv.layer2.2.model.2.weight", "differs from encoder_kv.layer2.2.relu"),
])
def test_one_to_one_violations_are_named(smoke_model, layout, fault, name, says):
    official = synthetic(layout)
    if fault == "extra":
        official[name] = torch.zeros(1)
    elif fault == "missing":
        del official[name]
    elif fault == "shape":
        official[name] = torch.zeros(32 * 9 + 1)
    else:
        official[name] = official[name] + 0.5
    pattern = rf"(?s)^synthetic: .*(?=.*{re.escape(says)})(?=.*{re.escape(name)})"
    with pytest.raises(ConversionError, match=pattern):
        load_official(smoke_model, official)


def test_settings_that_are_not_the_official_network_are_named(smoke_model):
    bad = {**smoke_model, "score_norm": "instance", "widths": [8, 16, 32, 48]}
    with pytest.raises(ValueError, match=r"(?s)model\.widths: \[8, 16, 32, 48\].*"
                                         r"model\.score_norm: instance.*\(set official\)"):
        OfficialGenerator(bad)
    with pytest.raises(ConversionError, match=r"model\.max_match_res: 16"):
        released.name_table({**smoke_model, "max_match_res": 16})


def test_read_official_strips_the_wrapper_and_names_bad_files(tmp_path, layout):
    official = synthetic(layout)
    path = tmp_path / "latest_net_G.pth"
    torch.save({f"module.{k}": v for k, v in official.items()}, path)
    read = released.read_official(path)
    assert sorted(read) == sorted(official)
    assert all(torch.equal(read[k], v) for k, v in official.items())
    path.write_bytes(b"not a torch file")
    with pytest.raises(ConversionError, match=r"latest_net_G\.pth: cannot read"):
        released.read_official(path)


def test_convert_stand_in_writes_a_loadable_checkpoint(tmp_path, manifest):
    s = settings("smoke", tmp_path, "random")
    out = tmp_path / "run" / "converted.pt"
    released.convert(s, out, CPU)
    net, ckpt = load_generator(out, CPU)
    facts = ckpt["extra"]["released"]
    assert facts["stand_in"] is True and facts["step"] is None
    assert facts["sources"]["dynast_deepfashion"]["kind"] == "stand-in"
    torch.manual_seed(s["seed"])
    seeded = OfficialGenerator(s["model"]).eval()
    seg, ref_img, ref_seg = inputs(s["model"], dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(net(seg, ref_img, ref_seg).image,
                           seeded(seg, ref_img, ref_seg).image)


def test_convert_official_file(tmp_path, manifest, layout):
    official = {k: v.float() if v.is_floating_point() else v
                for k, v in synthetic(layout, seed=4).items()}
    torch.save(official, tmp_path / FILENAME)
    s = settings("paper", tmp_path, "auto")
    out = tmp_path / "run" / "converted.pt"
    released.convert(s, out, CPU)
    net, ckpt = load_generator(out, CPU)
    facts = ckpt["extra"]["released"]
    assert facts["stand_in"] is False
    assert facts["sources"]["dynast_deepfashion"] == {
        "kind": "file", "sha256": sha256_file(tmp_path / FILENAME),
        "url": f"https://example.invalid/{FILENAME}"}
    assert torch.equal(net.blocks["1"][1].omega.weight, official["transformer_2.1.f_prune.weight"])
    assert torch.equal(net.fuse[0].act.weight, official["embed_1.relu.weight"])
    assert torch.equal(net.encoder_kv.stages[3].res.bn_1.running_var,
                       official["encoder_kv.layer4.2.model.4.running_var"])
    assert torch.equal(net.embed_q[2].conv_1.parametrizations.weight.original,
                       official["embed_q3.conv_1.weight_orig"])

    three = official_layout(8, 32, n_layers=3)  # a checkpoint of another depth is named
    torch.save(synthetic(three), tmp_path / FILENAME)
    with pytest.raises(ConversionError, match=r"model\.blocks_per_level: the checkpoint has 3"):
        released.convert(s, tmp_path / "again.pt", CPU)
    with pytest.raises(ConversionError, match=r"model\.architecture: paper"):
        released.convert({**s, "model": {**s["model"], "architecture": "paper"}},
                         tmp_path / "again.pt", CPU)
