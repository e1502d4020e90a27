"""2-D neighbourhood attention (NA) and dilated neighbourhood attention (DiNA), StyleNAT Sec. 2.1.2,
2.1.3 and 3.2, with NATTEN's semantics and an optional relative positional bias (RPB).

Tensors are heads-last, [B, H, W, heads, D] (NATTEN's layout). Per axis of length L, kernel k and
dilation d, the positions with the same residue r = p mod d form a sub-grid of length
L_r = ceil((L - r) / d); a query at sub-index i attends to the k sub-grid positions starting at
clamp(i - k // 2, 0, L_r - k) (left radius k // 2, so even kernels reach one further left), i.e.
windows are clamped at the borders and every query sees exactly k*k keys. The RPB is a
[heads, 2k-1, 2k-1] table indexed by the key-minus-query offset in sub-grid steps plus k-1 per axis
(NATTEN <= 0.17 `natten2dqkrpb`; at a border the offsets, and so the table entries, shift).
logits = scale * q.k + rpb, softmax over the k*k neighbours.

Backends:
- "torch": plain PyTorch (CPU and GPU, autograd): neighbour indices are built once per
  (H, W, k, d, device) and cached; keys and values are gathered into [B, heads, H*W, k*k, D].
- "flex": `torch.nn.attention.flex_attention` with a block mask of the same neighbour sets (cached
  per grid and device; the mask and the RPB `score_mod` compute coordinates arithmetically) and
  the RPB gradient computed beside Flex (`_BiasGradient`); compiled with `torch.compile` on CUDA,
  eager elsewhere (a dense reference; PyTorch has no Flex backward on the CPU, so only the RPB
  gets gradients there). Layout as NATTEN's Flex path does: with d dividing both sides the d*d
  sub-grids go into the batch (plain NA on each), and tokens go in 8 x 16 patches per 128-token
  Flex tile where the sides allow, so a tile's neighbourhoods touch few key tiles. head_dim < 16
  is zero-padded to 16 on CUDA (the compiled kernel's minimum).
- "fused": Triton kernels reading each query tile's key halo once (`neighborhood_fused.py`):
  forward and backward (q, k, v and the RPB), CUDA only (Triton's interpreter runs them on the
  CPU for tests), float32 (TF32 when torch allows TF32 matmuls), bfloat16, float16,
  kernel_size <= 13, head_dim <= 128.
- "natten": `natten.na2d` (NATTEN >= 0.20; it has no RPB). Without NATTEN's compiled kernels it
  runs NATTEN's own Flex path: forward only on the CPU, head_dim a power of two in [8, 512],
  float32/float16/bfloat16.
- "auto": see `auto_backend`.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from sparsegen.attention.tensor_cache import tensor_cache

BACKENDS = ("auto", "torch", "flex", "natten", "fused")
FLEX_BLOCK = 128  # Flex Attention's default tile: block-mask granularity (queries and keys)
FLEX_TILE = (8, 16)  # a Flex tile of tokens as a 2-D patch (rows, columns)
FLEX_MIN_DIM = 16  # compiled Flex on CUDA needs head_dim >= 16: smaller heads are zero-padded
FLEX_MAX_BATCH_HEADS = 65535  # CUDA's grid y limit, where Flex puts batch x heads
RECOMPILE_LIMIT = 64  # one compiled Flex graph per (shape, kernel) in a generator: 7-9 levels x
#                       a few batch sizes exceed torch's default of 8


def available_backends(device: torch.device | str) -> list[str]:
    """Concrete backends that run forward on `device` ("flex" and "natten" are forward-only on
    the CPU; "natten" needs the package; "fused" needs CUDA and Triton)."""
    kind = torch.device(device).type
    names = ["torch", "flex"]
    if importlib.util.find_spec("natten") is not None:
        names.append("natten")
    if kind == "cuda" and importlib.util.find_spec("triton") is not None:
        names.append("fused")
    return names if kind in ("cpu", "cuda") else ["torch"]


def auto_backend(q: torch.Tensor, rpb: torch.Tensor | None = None, dropout: float = 0.0,
                 kernel_size: int = 7, v: torch.Tensor | None = None) -> str:
    """The backend "auto" runs: "torch" off CUDA and whenever attention dropout is on; on CUDA
    "fused" when its kernels take the inputs (dtype, kernel_size, head_dim; Triton present),
    else "natten" when there is no RPB and NATTEN has its compiled kernels
    (`natten.HAS_LIBNATTEN`), else "flex" (compiled Flex Attention, RPB through `score_mod`)."""
    if not q.is_cuda or dropout > 0:
        return "torch"
    if importlib.util.find_spec("triton") is not None:
        from sparsegen.attention.neighborhood_fused import unsupported

        if unsupported(q, q if v is None else v, kernel_size) is None:
            return "fused"
    if rpb is None and natten_has_kernels():
        return "natten"
    return "flex"


def neighborhood_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                           dilation: int = 1, rpb: torch.Tensor | None = None, *,
                           scale: float | None = None, backend: str = "auto",
                           dropout: float = 0.0) -> torch.Tensor:
    """NA/DiNA of q, k, v [B, H, W, heads, D] -> [B, H, W, heads, D] (see the module docstring).

    rpb: [heads, 2k-1, 2k-1] or None; scale defaults to D ** -0.5; dropout: attention-weight
    dropout probability (training only; "torch" backend)."""
    _check_qkv(q, k, v)
    _check_grid(q.shape[1], q.shape[2], kernel_size, dilation)
    if rpb is not None:
        _check_rpb(rpb, q.shape[3], kernel_size)
    if backend not in BACKENDS:
        raise ValueError(f"neighborhood_attention: unknown backend {backend!r}; "
                         f"choose one of {BACKENDS}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "auto":
        backend = auto_backend(q, rpb, dropout, kernel_size, v)
    if dropout > 0 and backend != "torch":
        raise ValueError(f"neighborhood_attention: attention dropout {dropout} needs backend "
                         f"'torch' (got {backend!r})")
    if backend == "torch":
        return _torch_na(q, k, v, kernel_size, dilation, rpb, scale, dropout)
    if backend == "flex":
        return _flex_na(q, k, v, kernel_size, dilation, rpb, scale)
    if backend == "fused":
        from sparsegen.attention.neighborhood_fused import fused_neighborhood_attention

        return fused_neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale)
    if rpb is not None:
        raise ValueError("neighborhood_attention: backend 'natten' cannot add a relative "
                         "positional bias (NATTEN >= 0.20 removed RPB); use backend 'torch' or "
                         "'flex' (or 'auto'), which support rpb")
    return _natten_na(q, k, v, kernel_size, dilation, scale)


def query_attention_map(q: torch.Tensor, k: torch.Tensor, query: tuple[int, int],
                        kernel_size: int, dilation: int = 1, rpb: torch.Tensor | None = None, *,
                        scale: float | None = None) -> torch.Tensor:
    """Softmax weights of the query at (row, col) over the grid: [B, heads, H, W], zero outside
    its neighbourhood (the attention-map figure)."""
    _check_qkv(q, k, k)
    b, h, w, heads, dim = q.shape
    _check_grid(h, w, kernel_size, dilation)
    row, col = query
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"query_attention_map: query {query} lies outside the {h}x{w} grid")
    if rpb is not None:
        _check_rpb(rpb, heads, kernel_size)
    scale = dim ** -0.5 if scale is None else scale
    keys, bias = (t[row * w + col] for t in neighborhood_indices(h, w, kernel_size, dilation,
                                                                   q.device))
    logits = torch.einsum("bhd,bnhd->bhn", q[:, row, col] * scale, k.flatten(1, 2)[:, keys])
    if rpb is not None:
        logits = logits + rpb.flatten(1)[:, bias].to(logits.dtype)
    out = q.new_zeros(b, heads, h * w)
    out[:, :, keys] = logits.softmax(-1)
    return out.view(b, heads, h, w)


@tensor_cache(maxsize=256)
def neighborhood_indices(height: int, width: int, kernel_size: int, dilation: int = 1,
                         device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, bias) [H*W, k*k] int64: for each query (row-major), the row-major indices of its
    k*k keys and of their RPB entries in the flattened (2k-1)^2 table (cached)."""
    _check_grid(height, width, kernel_size, dilation)
    rows, row_off = _axis_neighbours(height, kernel_size, dilation)
    cols, col_off = _axis_neighbours(width, kernel_size, dilation)
    keys = rows[:, None, :, None] * width + cols[None, :, None, :]
    bias = row_off[:, None, :, None] * (2 * kernel_size - 1) + col_off[None, :, None, :]
    n = height * width
    return (keys.reshape(n, -1).to(device), bias.reshape(n, -1).to(device))


def _windows(pos: torch.Tensor, length: int, kernel: int, dilation: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For positions `pos` on an axis of `length`: their sub-grid (residue mod d), their index in
    that sub-grid and the sub-grid index where their window starts (integer arithmetic only, so
    it also runs inside Flex's mask_mod/score_mod)."""
    residue, sub = pos % dilation, pos // dilation
    sub_length = (length - residue + dilation - 1) // dilation
    return residue, sub, torch.minimum((sub - kernel // 2).clamp(min=0), sub_length - kernel)


def _axis_neighbours(length: int, kernel: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position on one axis: its k neighbour positions and their offsets (key - query in
    sub-grid steps) + k - 1, both [length, k]."""
    residue, sub, start = _windows(torch.arange(length), length, kernel, dilation)
    key_sub = start[:, None] + torch.arange(kernel)
    return residue[:, None] + dilation * key_sub, key_sub - sub[:, None] + kernel - 1


def _torch_na(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: int, dilation: int,
              rpb: torch.Tensor | None, scale: float, dropout: float) -> torch.Tensor:
    b, h, w, heads, dim = q.shape
    keys, bias = neighborhood_indices(h, w, kernel, dilation, q.device)
    n, kk = keys.shape

    def gathered(t: torch.Tensor) -> torch.Tensor:  # [B, H, W, heads, D] -> [B, heads, N, kk, D]
        t = t.reshape(b, n, heads, -1).transpose(1, 2)
        return t[:, :, keys.view(-1)].view(b, heads, n, kk, -1)

    qf = q.reshape(b, n, heads, dim).transpose(1, 2).unsqueeze(-2) * scale  # [B, heads, N, 1, D]
    logits = (qf @ gathered(k).transpose(-1, -2)).squeeze(-2)  # [B, heads, N, kk]
    if rpb is not None:
        logits = logits + rpb.flatten(1)[:, bias].to(logits.dtype)
    attn = logits.softmax(-1)
    if dropout > 0:
        attn = F.dropout(attn, dropout)
    out = (attn.unsqueeze(-2) @ gathered(v)).squeeze(-2)  # [B, heads, N, Dv]
    return out.transpose(1, 2).reshape(b, h, w, heads, -1)


# --- Flex Attention -------------------------------------------------------------------------


def _flex_tile(height: int, width: int) -> tuple[int, int] | None:
    """The 2-D patch of tokens laid out as one Flex tile (None: row-major order). A patch keeps
    a tile's neighbourhoods compact, so far fewer key tiles are visited than with row-major
    order, where a tile is a strip of a row."""
    th, tw = FLEX_TILE
    if height * width <= FLEX_BLOCK or height % th or width % tw:
        return None
    return FLEX_TILE


def _tile_order(height: int, width: int, tile: tuple[int, int] | None) -> torch.Tensor:
    """[H*W]: the row-major index of the token at each position of the Flex sequence."""
    order = torch.arange(height * width)
    if tile is None:
        return order
    th, tw = tile
    return order.view(height // th, th, width // tw, tw).transpose(1, 2).flatten()


class _Grid(NamedTuple):
    """A Flex sequence of H x W tokens: token order (`_tile_order`) and neighbourhood."""

    height: int
    width: int
    kernel: int
    dilation: int
    tile: tuple[int, int] | None

    def coords(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of the tokens at sequence positions `idx`."""
        if self.tile is None:
            return idx // self.width, idx % self.width
        th, tw = self.tile
        tile, within = idx // (th * tw), idx % (th * tw)
        per_row = self.width // tw
        return (tile // per_row) * th + within // tw, (tile % per_row) * tw + within % tw

    def windows(self, idx: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], ...]:
        """Per axis, `_windows` of the tokens at sequence positions `idx`."""
        row, col = self.coords(idx)
        return (_windows(row, self.height, self.kernel, self.dilation),
                _windows(col, self.width, self.kernel, self.dilation))


class _FlexLayout(NamedTuple):
    """Everything Flex needs for one grid and device (tokens in `_tile_order`)."""

    grid: _Grid
    block_mask: BlockMask
    keys: torch.Tensor  # [N, k*k]: sequence positions of each token's keys
    bias: torch.Tensor  # [N, k*k]: their RPB entries in the flattened table


@tensor_cache(maxsize=256)
def _flex_layout(grid: _Grid, device: torch.device) -> _FlexLayout:
    height, width, kernel, dilation, tile = grid
    n = height * width
    order = _tile_order(height, width, tile)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n)
    keys, bias = neighborhood_indices(height, width, kernel, dilation)
    keys, bias = rank[keys[order]], bias[order]
    # Which (query block, key block) tiles hold neighbour pairs, and which hold nothing else.
    blocks = -(-n // FLEX_BLOCK)
    pair_tile = (torch.arange(n)[:, None] // FLEX_BLOCK) * blocks + keys // FLEX_BLOCK
    pairs = torch.zeros(blocks * blocks, dtype=torch.int64).index_add_(
        0, pair_tile.view(-1), torch.ones(pair_tile.numel(), dtype=torch.int64))
    pairs = pairs.view(blocks, blocks)
    size = (n - torch.arange(blocks) * FLEX_BLOCK).clamp(max=FLEX_BLOCK)
    full = pairs == size[:, None] * size[None, :]
    mask = BlockMask.from_kv_blocks(*_kv_blocks((pairs > 0) & ~full, device),
                                    *_kv_blocks(full, device), BLOCK_SIZE=FLEX_BLOCK,
                                    mask_mod=_neighbour_mask_mod(grid), seq_lengths=(n, n))
    return _FlexLayout(grid, mask, keys.to(device), bias.to(device))


def _kv_blocks(selected: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """[Q blocks, KV blocks] bool -> (count [1, 1, Q], indices [1, 1, Q, KV]) int32 with the
    selected KV blocks first (Flex's block-mask format)."""
    order = torch.argsort((~selected).to(torch.int8), dim=-1, stable=True)
    return (selected.sum(-1).to(torch.int32)[None, None].to(device),
            order.to(torch.int32)[None, None].to(device))


def _neighbour_mask_mod(grid: _Grid):
    """mask_mod: kv_idx lies in q_idx's sub-grid on both axes and inside its k x k window
    (indices past the sequence, Flex's padding of a partial tile, are not)."""
    n = grid.height * grid.width

    def mask_mod(b, h, q_idx, kv_idx):
        inside = q_idx < n
        for (res_q, _, start), (res_k, sub_k, _) in zip(grid.windows(q_idx),
                                                        grid.windows(kv_idx), strict=True):
            inside = inside & (res_q == res_k) & (sub_k >= start) & (sub_k < start + grid.kernel)
        return inside & (kv_idx < n)

    return mask_mod


def _flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask,
                 grid: _Grid, table: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Flex Attention on [B, heads, N, D] with the RPB table [heads, (2k-1)^2] added by
    `score_mod` at the key-minus-query sub-grid offset."""
    span = 2 * grid.kernel - 1

    def rpb(score, b, h, q_idx, kv_idx):
        (_, qy, _), (_, qx, _) = grid.windows(q_idx)
        (_, ky, _), (_, kx, _) = grid.windows(kv_idx)
        dy = (ky - qy + grid.kernel - 1).clamp(0, span - 1)  # clamped: masked pairs stay in
        dx = (kx - qx + grid.kernel - 1).clamp(0, span - 1)  # the table
        return score + table[h, dy * span + dx]

    return flex_attention(q, k, v, score_mod=None if table is None else rpb,
                          block_mask=block_mask, scale=scale)


def _bias_gradient(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   table: torch.Tensor, keys: torch.Tensor, bias: torch.Tensor, scale: float
                   ) -> torch.Tensor:
    """dL/dT[h, o] = sum over (query, key) pairs whose bias entry is o of P (dP - sum P dP),
    dP = dO.v: the softmax backward restricted to the neighbour pairs, P recomputed from their
    logits (sum P dP = dO.out)."""
    logits = (q.unsqueeze(-2) * k[:, :, keys]).sum(-1) * scale + table[:, bias]
    weights = logits.softmax(-1)  # [B, heads, N, k*k]
    dp = (grad_out.unsqueeze(-2) * v[:, :, keys]).sum(-1)
    score_grad = weights * (dp - (weights * dp).sum(-1, keepdim=True))
    return torch.zeros_like(table).index_add_(1, bias.flatten(), score_grad.sum(0).flatten(1))


@functools.cache
def _compiled(fn):
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(fn, dynamic=False)


class _BiasGradient(torch.autograd.Function):
    """Identity on the Flex output, whose backward adds the bias table's gradient
    (`_bias_gradient`, compiled on CUDA). Flex's own gradient for a captured bias makes one
    atomic add per computed score onto the small table, which serialises (2-13x slower for a
    whole step at 64^2-256^2 on an H200). Nothing of the Flex output is kept for the backward:
    with torch 2.11, compiled Flex's output held other values by backward time when q, k, v
    were strided views."""

    @staticmethod
    def forward(ctx, out, table, q, k, v, layout, scale):
        ctx.save_for_backward(table, q, k, v)
        ctx.layout, ctx.scale = layout, scale
        return out.clone()

    @staticmethod
    def backward(ctx, grad_out):
        table, q, k, v = ctx.saved_tensors
        gradient = _compiled(_bias_gradient) if q.is_cuda else _bias_gradient
        grad_table = gradient(grad_out, q, k, v, table, ctx.layout.keys, ctx.layout.bias,
                              ctx.scale)
        return grad_out, grad_table, None, None, None, None, None


def _flex_na(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: int, dilation: int,
             rpb: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Dilation d dividing both sides: the d*d sub-grids are independent NA problems (d = 1) on
    (H/d) x (W/d) maps, moved into the batch as NATTEN does; tokens then go in `_flex_tile`
    patches."""
    b, h, w, heads = q.shape[:4]
    dim_v = v.shape[-1]
    d = dilation if h % dilation == 0 and w % dilation == 0 else 1
    sh, sw = h // d, w // d
    tile = _flex_tile(sh, sw)
    th, tw = tile or (1, sw)
    layout = _flex_layout(_Grid(sh, sw, kernel, dilation // d, tile), q.device)

    def sequence(t: torch.Tensor) -> torch.Tensor:  # -> [B * d * d, heads, H * W / d^2, D]
        if q.is_cuda and t.shape[-1] < FLEX_MIN_DIM:  # zero channels change no dot product
            t = F.pad(t, (0, FLEX_MIN_DIM - t.shape[-1]))
        t = t.reshape(b, sh // th, th, d, sw // tw, tw, d, heads, -1)
        t = t.permute(0, 3, 6, 7, 1, 4, 2, 5, 8)
        return t.reshape(b * d * d, heads, sh * sw, -1)

    attend = _compiled(_flex_attend) if q.is_cuda else _flex_attend
    table = None if rpb is None else rpb.flatten(1)
    qs, ks, vs = sequence(q), sequence(k), sequence(v)
    # Flex launches one program per (batch, head) along the CUDA grid's y axis, at most
    # FLEX_MAX_BATCH_HEADS: large dilations put d*d sub-grids into the batch (FFHQ-1024 at
    # 512^2, d 64, batch 8, 2 heads: 65,536), so the batch is cut into chunks below it.
    chunk = max(1, FLEX_MAX_BATCH_HEADS // heads)
    out = torch.cat([attend(qc, kc, vc, layout.block_mask, layout.grid,
                            None if table is None else table.detach(), scale)
                     for qc, kc, vc in zip(qs.split(chunk), ks.split(chunk), vs.split(chunk),
                                           strict=True)])
    if table is not None and table.requires_grad and torch.is_grad_enabled():
        out = _BiasGradient.apply(out, table, qs.detach(), ks.detach(), vs.detach(), layout,
                                  scale)
    out = out[..., :dim_v].reshape(b, d, d, heads, sh // th, sw // tw, th, tw, dim_v)
    return out.permute(0, 4, 6, 1, 5, 7, 2, 3, 8).reshape(b, h, w, heads, dim_v)


# --- NATTEN ---------------------------------------------------------------------------------


def natten_has_kernels() -> bool:
    """Whether NATTEN is installed with its compiled kernels (libnatten), which have a backward;
    without them its Flex path runs, forward only as we call it."""
    if importlib.util.find_spec("natten") is None:
        return False
    import natten

    return bool(natten.HAS_LIBNATTEN)


def natten_compiles_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether backend "natten" runs NATTEN's Flex path compiled for these inputs: on CUDA
    without libnatten, for the inputs NATTEN compiles (NATTEN 0.21: float16/bfloat16,
    32 <= head_dim <= 512, no backward). Otherwise that path runs eagerly, forming every
    query-key score. False with libnatten (its own kernels run) or without NATTEN."""
    if importlib.util.find_spec("natten") is None:
        return False
    import natten
    from natten.backends import get_compatible_backends

    if not q.is_cuda or natten.HAS_LIBNATTEN:
        return False
    natten.allow_flex_compile()
    return bool(get_compatible_backends(q, k, v, torch_compile=True))


def _natten_na(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: int, dilation: int,
               scale: float) -> torch.Tensor:
    """`natten.na2d`. Without libnatten NATTEN runs Flex Attention, eagerly (a dense fallback)
    unless Flex compilation is allowed: on CUDA it is, for the inputs NATTEN compiles (half
    precision, 32 <= head_dim <= 512, no backward)."""
    if importlib.util.find_spec("natten") is None:
        raise ValueError("neighborhood_attention: backend 'natten' needs the natten package "
                         "(pip install natten); backends 'torch' and 'flex' need nothing extra")
    import natten
    from natten.backends import get_compatible_backends

    compile_flex = natten_compiles_flex(q, k, v)
    if not get_compatible_backends(q, k, v, torch_compile=compile_flex):
        raise ValueError(f"neighborhood_attention: natten {natten.__version__} has no backend for "
                         f"head_dim {q.shape[-1]}, {q.dtype} on {q.device} (its Flex path needs "
                         "head_dim a power of two in [8, 512] and float32/float16/bfloat16); "
                         "use backend 'torch' or 'flex'")
    return natten.na2d(q, k, v, kernel, dilation=dilation, scale=scale,
                       torch_compile=compile_flex)


# --- validation -----------------------------------------------------------------------------


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 5:
        raise ValueError(f"neighborhood attention: q must be [B, H, W, heads, D], got shape "
                         f"{tuple(q.shape)}")
    if k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"neighborhood attention: k {tuple(k.shape)} must match q "
                         f"{tuple(q.shape)}, and v {tuple(v.shape)} must match it but for D")


def _check_grid(height: int, width: int, kernel: int, dilation: int) -> None:
    if kernel < 1 or dilation < 1:
        raise ValueError(f"neighborhood attention: kernel_size {kernel} and dilation {dilation} "
                         "must be >= 1")
    if kernel * dilation > min(height, width):
        what = f"kernel_size {kernel}" + (f" x dilation {dilation}" if dilation > 1 else "")
        raise ValueError(f"neighborhood attention: {what} = {kernel * dilation} exceeds the "
                         f"{height}x{width} grid (each of the dilation's sub-grids needs at "
                         "least kernel_size positions per side)")


def _check_rpb(rpb: torch.Tensor, heads: int, kernel: int) -> None:
    expected = (heads, 2 * kernel - 1, 2 * kernel - 1)
    if tuple(rpb.shape) != expected:
        raise ValueError(f"neighborhood attention: rpb has shape {tuple(rpb.shape)}, expected "
                         f"[heads, 2k-1, 2k-1] = {list(expected)}")
