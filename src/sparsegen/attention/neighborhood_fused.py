"""Fused 2-D neighbourhood attention (NA/DiNA) with a relative position bias: the "fused" backend of
`neighborhood.py`, as Triton kernels (Triton ships with the CUDA build of torch).

Semantics are those of `neighborhood.py` (NATTEN's): per axis, dilation d splits positions into
sub-grids by residue p mod d; a query at sub-index i attends to the k sub-grid positions starting
at clamp(i - k // 2, 0, L_r - k); the RPB entry of a pair is T[ky - qy + k - 1, kx - qx + k - 1]
in sub-grid steps; logits = scale * q.k + rpb, softmax over the k*k neighbours.

Layout of the work: one program per (2-D tile of queries or keys of one sub-grid, batch x head).
The neighbourhoods of a TQH x TQW query tile form one halo of at most (TQH + k - 1) x (TQW + k - 1)
keys (window starts move by at most one per query step), read once per tile in 2-D chunks of
KR x KW keys; a chunk's scores are masked to each query's own k x k window, so every query's
softmax runs over exactly its k*k keys (online softmax, the log-sum-exp saved for the backward).

Backward (FlashAttention-2's split, no atomics, deterministic):
- dK, dV per key tile over the queries whose windows contain those keys (per axis an interval:
  `_query_span`), recomputing P from the saved log-sum-exp;
- dQ per query tile over the same halo as the forward, and the RPB gradient dT[h, o] = sum of
  dS over the pairs whose offset is o: a chunk's dS [queries, keys] is regrouped as
  [(query row, key row), (query column, key column)] and reduced by two one-hot matmuls (column
  offsets, then row offsets) into a (2k-1) x (2k-1) partial per program, summed afterwards.

dS = P * (dP - delta), delta = rowsum(dO * O) (FlashAttention-2, Alg. 2); logits in base 2
(scale * log2 e) so the kernels use exp2.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

MAX_KERNEL = 13
MAX_HEAD_DIM = 128
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_BATCH_HEADS = 65535  # CUDA's grid y limit: batch x heads go there
LOG2E = math.log2(math.e)
# Masked logit: finite, so a chunk holding no neighbour of a query gives no NaN (-inf - -inf).
NEG = tl.constexpr(-1.0e30)
# Tiles (rows, columns) of a program and of the chunks it loops over.
TILE = (8, 8)        # queries (forward, dQ) or keys (dK, dV) of one program
CHUNK_ROWS = 2       # halo rows per chunk; chunk columns: the halo's width as a power of two
LAUNCH = {"num_warps": 4, "num_stages": 2}  # from a short, unrecorded tuning pass on an H200


def unsupported(q: torch.Tensor, v: torch.Tensor, kernel: int) -> str | None:
    """Why the fused kernels cannot run these inputs, or None when they can."""
    if not (q.is_cuda or interpreted()):
        return f"needs a CUDA device (got {q.device}; TRITON_INTERPRET=1 runs it on the CPU)"
    if q.dtype not in DTYPES or v.dtype != q.dtype:
        return f"supports float32, bfloat16 and float16 inputs (got {q.dtype}, {v.dtype})"
    if kernel > MAX_KERNEL:
        return f"supports kernel_size <= {MAX_KERNEL} (got {kernel})"
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        return f"supports head_dim <= {MAX_HEAD_DIM} (got {q.shape[-1]}, {v.shape[-1]})"
    return None


def interpreted() -> bool:
    """Whether Triton's interpreter runs the kernels (on CPU tensors, with NumPy: tests only).
    It needs TRITON_INTERPRET=1 from before Triton is first imported (its own `tl` functions
    are defined then) until the kernels run (tests/conftest.py sets it without CUDA)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def fused_neighborhood_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: int,
                                 dilation: int, rpb: torch.Tensor | None, scale: float
                                 ) -> torch.Tensor:
    """NA/DiNA of q, k, v [B, H, W, heads, D] with optional rpb [heads, 2k-1, 2k-1]; inputs
    already validated by `neighborhood_attention`; differentiable in q, k, v and rpb."""
    reason = unsupported(q, v, kernel)
    if reason:
        raise ValueError(f"neighborhood_attention: backend 'fused' {reason}; use backend "
                         "'torch' or 'flex'")
    return _FusedNA.apply(q, k, v, rpb, kernel, dilation, scale)


@functools.lru_cache(maxsize=512)
def _geometry(batch: int, height: int, width: int, heads: int, kernel: int, dilation: int,
              tile: tuple[int, int], chunk_rows: int) -> _Geometry:
    """One `_Geometry` per problem shape (cached: a generator calls the same few shapes on
    every pass, and building it is Python time between kernel launches)."""
    return _Geometry(batch, height, width, heads, kernel, dilation, tile, chunk_rows)


class _Geometry:
    """Launch geometry shared by the three kernels: tiles of each dilation sub-grid, and the
    batch slices that keep batch x heads within the grid's y limit."""

    def __init__(self, batch: int, height: int, width: int, heads: int, kernel: int,
                 dilation: int, tile: tuple[int, int], chunk_rows: int) -> None:
        self.batch, self.height, self.width, self.heads = batch, height, width, heads
        self.kernel, self.dilation, self.tile = kernel, dilation, tile
        th, tw = tile
        sub_h, sub_w = triton.cdiv(height, dilation), triton.cdiv(width, dilation)  # longest
        self.tiles_x = triton.cdiv(sub_w, tw)  # tiles cover the longest sub-grid of each axis
        self.tiles = triton.cdiv(sub_h, th) * self.tiles_x
        # chunk columns: a query tile's key halo is tw + k - 1 wide (a key tile's query span
        # can be wider near the borders: the dK/dV kernel loops over column chunks)
        self.chunk_cols = max(16, triton.next_power_of_2(tw + kernel - 1))
        self.chunk_rows = max(chunk_rows, 16 // th)  # the RPB gradient's dots need >= 16 rows
        self.offsets = max(16, triton.next_power_of_2(2 * kernel - 1))
        self.scalars = {"HEADS": heads, "HEIGHT": height, "WIDTH": width, "KSIZE": kernel,
                        "DIL": dilation, "TILES": self.tiles, "TILES_X": self.tiles_x}
        step = max(1, MAX_BATCH_HEADS // heads)
        self.chunks = [slice(s, min(s + step, batch)) for s in range(0, batch, step)]

    def grid(self, part: slice) -> tuple[int, int]:
        return (self.tiles * self.dilation ** 2, (part.stop - part.start) * self.heads)

    def parts(self, *tensors: torch.Tensor) -> list[tuple[slice, list[torch.Tensor]]]:
        """Per batch slice: the slice and the tensors cut to it (uncut when one slice holds
        the whole batch)."""
        if len(self.chunks) == 1:
            return [(self.chunks[0], list(tensors))]
        return [(part, [t[part] for t in tensors]) for part in self.chunks]



def _precision(q: torch.Tensor) -> str:
    """tl.dot input precision: TF32 for float32 when torch allows TF32 matmuls, else exact."""
    tf32 = q.dtype == torch.float32 and q.is_cuda and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor | None,
             geo: _Geometry, scale: float, precision: str
             ) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype, device=q.device)
    lse = torch.empty(geo.batch, geo.heads, geo.height, geo.width, dtype=torch.float32,
                      device=q.device)
    for part, (qs, ks, vs, os_, ls) in geo.parts(q, k, v, out, lse):
        _na_forward[geo.grid(part)](
            qs, ks, vs, table if table is not None else qs, os_, ls,
            *_strides(qs), *_strides(ks), *_strides(vs), *_strides(os_),
            q.shape[-1], v.shape[-1], scale * LOG2E, **geo.scalars,
            HAS_RPB=table is not None, TQH=geo.tile[0], TQW=geo.tile[1], KR=geo.chunk_rows,
            KW=geo.chunk_cols, BLOCK_D=_block(q.shape[-1]), BLOCK_DV=_block(v.shape[-1]),
            PRECISION=precision, **LAUNCH)
    return out, lse


def _block(dim: int) -> int:
    return max(16, triton.next_power_of_2(dim))


def _backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              table: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor, geo: _Geometry,
              scale: float, precision: str, table_grad: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    grad_out = _unit_last(grad_out)
    # delta = rowsum(dO * O) per query and head, [B, heads, H, W] like lse
    delta = (grad_out.float() * out.float()).sum(-1).permute(0, 3, 1, 2).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    partial = None
    if table_grad:
        n = geo.offsets
        partial = torch.empty(geo.batch, geo.heads, geo.tiles * geo.dilation ** 2, n, n,
                              dtype=torch.float32, device=q.device)
    meta = {"HAS_RPB": table is not None, "BLOCK_D": _block(q.shape[-1]),
            "BLOCK_DV": _block(v.shape[-1]), "PRECISION": precision}
    tensors = [q, k, v, grad_out, lse, delta, dq, dk, dv]
    for part, (qs, ks, vs, dos, ls, de, dqs, dks, dvs, *rest) in geo.parts(
            *tensors, *([partial] if partial is not None else [])):
        tab = table if table is not None else qs
        common = (*_strides(qs), *_strides(ks), *_strides(vs), *_strides(dos))
        _na_backward_kv[geo.grid(part)](
            qs, ks, vs, tab, dos, ls, de, dks, dvs,
            *common, *_strides(dk), *_strides(dv), q.shape[-1], v.shape[-1], scale * LOG2E,
            scale, **geo.scalars, TKH=geo.tile[0], TKW=geo.tile[1], QR=geo.chunk_rows,
            QW=geo.chunk_cols, **meta, **LAUNCH)
        _na_backward_q[geo.grid(part)](
            qs, ks, vs, tab, dos, ls, de, dqs, rest[0] if rest else qs,
            *common, *_strides(dq), q.shape[-1], v.shape[-1], scale * LOG2E, scale,
            **geo.scalars, RPB_GRAD=table_grad, BO=geo.offsets, TQH=geo.tile[0], TQW=geo.tile[1],
            KR=geo.chunk_rows, KW=geo.chunk_cols, **meta, **LAUNCH)
    grad_table = None
    if partial is not None:
        span = 2 * geo.kernel - 1
        grad_table = partial.view(geo.batch, geo.heads, -1, geo.offsets, geo.offsets)
        grad_table = grad_table.sum((0, 2))[:, :span, :span]
    return dq, dk, dv, grad_table


class _FusedNA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, dilation, scale):
        q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
        table = None if rpb is None else rpb.detach().float().contiguous()
        geo = _geometry(*q.shape[:4], kernel, dilation, TILE, CHUNK_ROWS)
        precision = _precision(q)
        out, lse = _forward(q, k, v, table, geo, scale, precision)
        ctx.save_for_backward(q, k, v, table, out, lse)
        ctx.geo, ctx.scale, ctx.precision = geo, scale, precision
        ctx.rpb_dtype = None if rpb is None else rpb.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, table, out, lse = ctx.saved_tensors
        table_grad = table is not None and ctx.needs_input_grad[3]
        dq, dk, dv, dt = _backward(grad_out, q, k, v, table, out, lse, ctx.geo, ctx.scale,
                                   ctx.precision, table_grad)
        if dt is not None:
            dt = dt.to(ctx.rpb_dtype)
        return dq, dk, dv, dt, None, None, None


# --- kernels ----------------------------------------------------------------------------------


@triton.jit
def _start(pos, length, KSIZE):
    """Window start on a sub-grid axis of `length`: clamp(pos - k // 2, 0, length - k)."""
    return tl.minimum(tl.maximum(pos - KSIZE // 2, 0), length - KSIZE)


@triton.jit
def _program(HEADS, HEIGHT, WIDTH, DIL, TILES, TILES_X, TH: tl.constexpr, TW: tl.constexpr):
    """This program's batch, head, sub-grid residues (ry, rx), the sub-grid's lengths and its
    tile origin (sub-grid coordinates)."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    residue, tile = pid // TILES, pid % TILES
    ry, rx = residue // DIL, residue % DIL
    ly = (HEIGHT - ry + DIL - 1) // DIL
    lx = (WIDTH - rx + DIL - 1) // DIL
    y0 = (tile // TILES_X) * TH
    x0 = (tile % TILES_X) * TW
    return bh // HEADS, bh % HEADS, bh, ry, rx, ly, lx, y0, x0


@triton.jit
def _key_span(t0, T: tl.constexpr, length, KSIZE):
    """[lo, hi) on one axis: the keys of the queries t0 .. t0 + T - 1 (empty past the axis)."""
    last = tl.minimum(t0 + T, length) - 1
    lo = _start(t0, length, KSIZE)
    hi = _start(last, length, KSIZE) + KSIZE
    return lo, tl.where(t0 < length, hi, lo)


@triton.jit
def _query_span(t0, T: tl.constexpr, length, KSIZE):
    """[lo, hi) on one axis: the queries whose windows hold some key t0 .. t0 + T - 1: the first
    query whose window reaches t0, through the last whose window starts at or before the last
    key (windows clamp at the borders, so near them more than k queries see a key)."""
    last = tl.minimum(t0 + T, length) - 1
    first_start = t0 - KSIZE + 1
    lo = tl.where(first_start > 0, first_start + KSIZE // 2, 0)
    hi = tl.where(last >= length - KSIZE, length, tl.minimum(last + KSIZE // 2 + 1, length))
    return lo, tl.where(t0 < length, hi, lo)


@triton.jit
def _pairs(qy, qx, ky, kx, ly, lx, KSIZE):
    """For (query, key) sub-grid coordinates broadcast against each other: whether the key lies
    in the query's k x k window, and the pair's entry in the flattened (2k-1)^2 RPB table."""
    span = 2 * KSIZE - 1
    inside = (((ky - _start(qy, ly, KSIZE)).to(tl.uint32) < KSIZE)
              & ((kx - _start(qx, lx, KSIZE)).to(tl.uint32) < KSIZE))
    return inside, (ky - qy + KSIZE - 1) * span + (kx - qx + KSIZE - 1)


@triton.jit
def _scores(a, b, table, entry, valid, scale_log2, HAS_RPB: tl.constexpr,
            PRECISION: tl.constexpr):
    """Base-2 logits of a @ b^T plus each pair's RPB entry of `table` (one head's), NEG where
    `valid` is false."""
    s = tl.dot(a, tl.trans(b), input_precision=PRECISION) * scale_log2
    if HAS_RPB:
        s += tl.load(table + entry, mask=valid, other=0.0) * 1.4426950408889634  # log2(e)
    return tl.where(valid, s, NEG)


@triton.jit
def _na_forward(Q, K, V, T, O, LSE,
                sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
                sob, soy, sox, soh,
                DIM, DIM_V, scale_log2,
                HEADS, HEIGHT, WIDTH, KSIZE, DIL, TILES, TILES_X,
                HAS_RPB: tl.constexpr, TQH: tl.constexpr, TQW: tl.constexpr,
                KR: tl.constexpr, KW: tl.constexpr, BLOCK_D: tl.constexpr,
                BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr):
    b, h, bh, ry, rx, ly, lx, y0, x0 = _program(HEADS, HEIGHT, WIDTH, DIL, TILES, TILES_X,
                                                 TQH, TQW)
    i = tl.arange(0, TQH * TQW)
    qy, qx = y0 + i // TQW, x0 + i % TQW
    q_ok = (qy < ly) & (qx < lx)
    d, dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    table = T + h * (2 * KSIZE - 1) * (2 * KSIZE - 1)  # this head's RPB
    py, px = ry + DIL * qy, rx + DIL * qx
    q = tl.load(Q + b * sqb + h * sqh + (py * sqy + px * sqx)[:, None] + d[None, :],
                mask=q_ok[:, None] & (d[None, :] < DIM), other=0.0)
    m = tl.full([TQH * TQW], NEG, tl.float32)
    l_sum = tl.zeros([TQH * TQW], tl.float32)
    acc = tl.zeros([TQH * TQW, BLOCK_DV], tl.float32)
    r_lo, r_hi = _key_span(y0, TQH, ly, KSIZE)
    c_lo, c_hi = _key_span(x0, TQW, lx, KSIZE)
    j = tl.arange(0, KR * KW)
    for r0 in range(r_lo, r_hi, KR):
        for c0 in range(c_lo, c_hi, KW):
            ky, kx = r0 + j // KW, c0 + j % KW
            k_ok = (ky < r_hi) & (kx < c_hi)
            kpos = (ry + DIL * ky) * sky + (rx + DIL * kx) * skx
            key = tl.load(K + b * skb + h * skh + kpos[:, None] + d[None, :],
                          mask=k_ok[:, None] & (d[None, :] < DIM), other=0.0)
            vpos = (ry + DIL * ky) * svy + (rx + DIL * kx) * svx
            val = tl.load(V + b * svb + h * svh + vpos[:, None] + dv[None, :],
                          mask=k_ok[:, None] & (dv[None, :] < DIM_V), other=0.0)
            inside, entry = _pairs(qy[:, None], qx[:, None], ky[None, :], kx[None, :], ly, lx,
                                   KSIZE)
            valid = q_ok[:, None] & inside
            s = _scores(q, key, table, entry, valid, scale_log2, HAS_RPB, PRECISION)
            m_new = tl.maximum(m, tl.max(s, 1))
            p = tl.where(valid, tl.exp2(s - m_new[:, None]), 0.0)
            alpha = tl.exp2(m - m_new)
            l_sum = l_sum * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(val.dtype), val, input_precision=PRECISION)
            m = m_new
    l_safe = tl.where(l_sum > 0, l_sum, 1.0)
    out = acc / l_safe[:, None]
    tl.store(O + b * sob + h * soh + (py * soy + px * sox)[:, None] + dv[None, :],
             out.to(O.dtype.element_ty), mask=q_ok[:, None] & (dv[None, :] < DIM_V))
    tl.store(LSE + bh * HEIGHT * WIDTH + py * WIDTH + px, m + tl.log2(l_safe), mask=q_ok)


@triton.jit
def _na_backward_kv(Q, K, V, T, DO, LSE, DELTA, DK, DV,
                    sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
                    sdb, sdy, sdx, sdh, skgb, skgy, skgx, skgh, svgb, svgy, svgx, svgh,
                    DIM, DIM_V, scale_log2, scale,
                    HEADS, HEIGHT, WIDTH, KSIZE, DIL, TILES, TILES_X,
                    HAS_RPB: tl.constexpr, TKH: tl.constexpr, TKW: tl.constexpr,
                    QR: tl.constexpr, QW: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr):
    """dK, dV of one key tile: sums over the queries whose windows contain its keys."""
    b, h, bh, ry, rx, ly, lx, y0, x0 = _program(HEADS, HEIGHT, WIDTH, DIL, TILES, TILES_X,
                                                 TKH, TKW)
    i = tl.arange(0, TKH * TKW)
    ky, kx = y0 + i // TKW, x0 + i % TKW
    k_ok = (ky < ly) & (kx < lx)
    d, dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    table = T + h * (2 * KSIZE - 1) * (2 * KSIZE - 1)  # this head's RPB
    py, px = ry + DIL * ky, rx + DIL * kx
    key = tl.load(K + b * skb + h * skh + (py * sky + px * skx)[:, None] + d[None, :],
                  mask=k_ok[:, None] & (d[None, :] < DIM), other=0.0)
    val = tl.load(V + b * svb + h * svh + (py * svy + px * svx)[:, None] + dv[None, :],
                  mask=k_ok[:, None] & (dv[None, :] < DIM_V), other=0.0)
    dk = tl.zeros([TKH * TKW, BLOCK_D], tl.float32)
    dval = tl.zeros([TKH * TKW, BLOCK_DV], tl.float32)
    r_lo, r_hi = _query_span(y0, TKH, ly, KSIZE)
    c_lo, c_hi = _query_span(x0, TKW, lx, KSIZE)
    j = tl.arange(0, QR * QW)
    for r0 in range(r_lo, r_hi, QR):
        for c0 in range(c_lo, c_hi, QW):
            qy, qx = r0 + j // QW, c0 + j % QW
            q_ok = (qy < r_hi) & (qx < c_hi)
            qpy, qpx = ry + DIL * qy, rx + DIL * qx
            q = tl.load(Q + b * sqb + h * sqh + (qpy * sqy + qpx * sqx)[:, None] + d[None, :],
                        mask=q_ok[:, None] & (d[None, :] < DIM), other=0.0)
            do = tl.load(DO + b * sdb + h * sdh + (qpy * sdy + qpx * sdx)[:, None] + dv[None, :],
                         mask=q_ok[:, None] & (dv[None, :] < DIM_V), other=0.0)
            row = bh * HEIGHT * WIDTH + qpy * WIDTH + qpx
            lse = tl.load(LSE + row, mask=q_ok, other=0.0)
            delta = tl.load(DELTA + row, mask=q_ok, other=0.0)
            inside, entry = _pairs(qy[None, :], qx[None, :], ky[:, None], kx[:, None], ly, lx,
                                   KSIZE)
            valid = k_ok[:, None] & q_ok[None, :] & inside
            s = _scores(key, q, table, entry, valid, scale_log2, HAS_RPB, PRECISION)
            p = tl.where(valid, tl.exp2(s - lse[None, :]), 0.0)  # P^T [keys, queries]
            dval += tl.dot(p.to(do.dtype), do, input_precision=PRECISION)
            dp = tl.dot(val, tl.trans(do), input_precision=PRECISION)
            ds = p * (dp - delta[None, :])
            dk += tl.dot(ds.to(q.dtype), q, input_precision=PRECISION)
    tl.store(DK + b * skgb + h * skgh + (py * skgy + px * skgx)[:, None] + d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=k_ok[:, None] & (d[None, :] < DIM))
    tl.store(DV + b * svgb + h * svgh + (py * svgy + px * svgx)[:, None] + dv[None, :],
             dval.to(DV.dtype.element_ty), mask=k_ok[:, None] & (dv[None, :] < DIM_V))


@triton.jit
def _na_backward_q(Q, K, V, T, DO, LSE, DELTA, DQ, DT,
                   sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
                   sdb, sdy, sdx, sdh, sqgb, sqgy, sqgx, sqgh,
                   DIM, DIM_V, scale_log2, scale,
                   HEADS, HEIGHT, WIDTH, KSIZE, DIL, TILES, TILES_X,
                   HAS_RPB: tl.constexpr, RPB_GRAD: tl.constexpr, BO: tl.constexpr,
                   TQH: tl.constexpr, TQW: tl.constexpr, KR: tl.constexpr, KW: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr):
    """dQ of one query tile over its key halo and, with RPB_GRAD, this tile's partial RPB
    gradient DT[bh, program] ([BO, BO], offsets beyond 2k-1 stay zero)."""
    b, h, bh, ry, rx, ly, lx, y0, x0 = _program(HEADS, HEIGHT, WIDTH, DIL, TILES, TILES_X,
                                                 TQH, TQW)
    i = tl.arange(0, TQH * TQW)
    qy, qx = y0 + i // TQW, x0 + i % TQW
    q_ok = (qy < ly) & (qx < lx)
    d, dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    table = T + h * (2 * KSIZE - 1) * (2 * KSIZE - 1)  # this head's RPB
    py, px = ry + DIL * qy, rx + DIL * qx
    q = tl.load(Q + b * sqb + h * sqh + (py * sqy + px * sqx)[:, None] + d[None, :],
                mask=q_ok[:, None] & (d[None, :] < DIM), other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + (py * sdy + px * sdx)[:, None] + dv[None, :],
                 mask=q_ok[:, None] & (dv[None, :] < DIM_V), other=0.0)
    row = bh * HEIGHT * WIDTH + py * WIDTH + px
    lse = tl.load(LSE + row, mask=q_ok, other=0.0)
    delta = tl.load(DELTA + row, mask=q_ok, other=0.0)
    dq = tl.zeros([TQH * TQW, BLOCK_D], tl.float32)
    dt = tl.zeros([BO, BO], tl.float32)
    r_lo, r_hi = _key_span(y0, TQH, ly, KSIZE)
    c_lo, c_hi = _key_span(x0, TQW, lx, KSIZE)
    j = tl.arange(0, KR * KW)
    # one-hot row/column offsets of the regrouped dS (see the module docstring)
    g_rows = tl.arange(0, TQH * KR)  # (query row, key row)
    g_cols = tl.arange(0, TQW * KW)  # (query column, key column)
    o = tl.arange(0, BO)
    for r0 in range(r_lo, r_hi, KR):
        for c0 in range(c_lo, c_hi, KW):
            ky, kx = r0 + j // KW, c0 + j % KW
            k_ok = (ky < r_hi) & (kx < c_hi)
            kpos = (ry + DIL * ky) * sky + (rx + DIL * kx) * skx
            key = tl.load(K + b * skb + h * skh + kpos[:, None] + d[None, :],
                          mask=k_ok[:, None] & (d[None, :] < DIM), other=0.0)
            vpos = (ry + DIL * ky) * svy + (rx + DIL * kx) * svx
            val = tl.load(V + b * svb + h * svh + vpos[:, None] + dv[None, :],
                          mask=k_ok[:, None] & (dv[None, :] < DIM_V), other=0.0)
            inside, entry = _pairs(qy[:, None], qx[:, None], ky[None, :], kx[None, :], ly, lx,
                                   KSIZE)
            valid = q_ok[:, None] & inside
            s = _scores(q, key, table, entry, valid, scale_log2, HAS_RPB, PRECISION)
            p = tl.where(valid, tl.exp2(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(val), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(key.dtype), key, input_precision=PRECISION)
            if RPB_GRAD:
                grouped = tl.reshape(tl.permute(tl.reshape(ds, (TQH, TQW, KR, KW)),
                                                (0, 2, 1, 3)), (TQH * KR, TQW * KW))
                col_off = c0 + g_cols % KW - (x0 + g_cols // KW) + KSIZE - 1
                by_col = tl.dot(grouped, (col_off[:, None] == o[None, :]).to(tl.float32),
                                input_precision=PRECISION)  # [(qrow, krow), column offset]
                row_off = r0 + g_rows % KR - (y0 + g_rows // KR) + KSIZE - 1
                dt += tl.dot((o[:, None] == row_off[None, :]).to(tl.float32), by_col,
                             input_precision=PRECISION)
    tl.store(DQ + b * sqgb + h * sqgh + (py * sqgy + px * sqgx)[:, None] + d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=q_ok[:, None] & (d[None, :] < DIM))
    if RPB_GRAD:
        program = bh * tl.num_programs(0) + tl.program_id(0)
        tl.store(DT + program * BO * BO + o[:, None] * BO + o[None, :], dt)
