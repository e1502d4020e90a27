"""DynaST dynamic (sparse) attention, Eq. 2-7 and 12-13, against explicit per-query loops."""

from __future__ import annotations

import pytest
import torch

import sparsegen.attention.dynamic_sparse as ds
from sparsegen.attention.all_to_all import count_scores
from sparsegen.attention.dynamic_sparse import (
    dense_dynamic_attention,
    inner_scale_candidates,
    inter_scale_candidates,
    sign_sigmoid_grad,
    sparse_dynamic_attention,
)

F64 = torch.float64
Q_HW, K_HW = (4, 6), (6, 4)  # non-square, different query and key grids
NQ, NK = 24, 24
SCALE, PRUNE_SCALE = 0.4, 0.5


def _maps(b=2, q_hw=Q_HW, k_hw=K_HW, cqk=5, cv=3, cp=4):
    q, k = torch.randn(b, cqk, *q_hw, dtype=F64), torch.randn(b, cqk, *k_hw, dtype=F64)
    v, image = torch.randn(b, cv, *k_hw, dtype=F64), torch.randn(b, 3, *k_hw, dtype=F64)
    qp, kp = torch.randn(b, cp, *q_hw, dtype=F64), torch.randn(b, cp, *k_hw, dtype=F64)
    return q, k, v, qp, kp, image


def _random_candidates(b, nq, n, nk=NK):
    cands = torch.randint(0, nk, (b, nq, n))
    cands[:, :, 1] = cands[:, :, 0]  # a duplicated candidate in every list
    return cands


def loops(q, k, v, qp, kp, cands=None, *, image=None, topk=4, eps=1e-8, warp_mask="paper"):
    """Per query: its candidate keys (all of them when cands is None), C = scale q.k, A = softmax,
    P = prune_scale qp.kp, D = [P > 0]; out = sum D A v, conf = sum D A; warp: Eq. 12 literally
    (D exp(C) / (sum D exp(C) + eps)) or, 'inverted', softmax over the pruned candidates only
    (uniform over all when none is pruned); top-k: candidates sorted by C, descending."""
    b, _, hq, wq = q.shape
    wk = k.shape[-1]
    nq = hq * wq
    out = torch.zeros(b, v.shape[1], nq, dtype=F64)
    conf, kept = torch.zeros(b, nq, dtype=F64), torch.zeros(b, nq, dtype=torch.long)
    warp = torch.zeros(b, 3, nq, dtype=F64)
    top = []
    for bi in range(b):
        for i in range(nq):
            y, x = divmod(i, wq)
            js = list(range(k.shape[-2] * wk)) if cands is None else cands[bi, i].tolist()
            ky, kx = torch.tensor([j // wk for j in js]), torch.tensor([j % wk for j in js])
            c = SCALE * (q[bi, :, y, x, None] * k[bi][:, ky, kx]).sum(0)
            a = torch.exp(c - c.max()) / torch.exp(c - c.max()).sum()
            if qp is None:
                d = torch.ones_like(c)
            else:
                d = (PRUNE_SCALE * (qp[bi, :, y, x, None] * kp[bi][:, ky, kx]).sum(0) > 0).to(F64)
            kept[bi, i] = int(d.sum())
            out[bi, :, i] = (d * a * v[bi][:, ky, kx]).sum(1)
            conf[bi, i] = (d * a).sum()
            if image is not None:
                if warp_mask == "paper":
                    w = d * torch.exp(c) / ((d * torch.exp(c)).sum() + eps)
                elif (d == 0).any():
                    w = torch.zeros_like(c)
                    w[d == 0] = torch.exp(c[d == 0]) / torch.exp(c[d == 0]).sum()
                else:
                    w = torch.full_like(c, 1 / len(js))
                warp[bi, :, i] = (w * image[bi][:, ky, kx]).sum(1)
            order = sorted(range(len(js)), key=lambda n: -float(c[n]))
            top.append([js[n] for n in order[:topk]] if topk else [])
    return dict(out=out.view(b, -1, hq, wq), conf=conf.view(b, 1, hq, wq),
                warp=warp.view(b, 3, hq, wq), topk=torch.tensor(top).view(b, nq, -1), kept=kept)


def _assert_match(m, ref, image=True):
    assert torch.allclose(m.out, ref["out"])
    assert torch.allclose(m.conf, ref["conf"])
    assert ((m.conf >= 0) & (m.conf <= 1 + 1e-12)).all()
    if image:
        assert torch.allclose(m.warp, ref["warp"])
    else:
        assert m.warp is None
    assert torch.equal(m.topk, ref["topk"])
    assert torch.equal(m.kept, ref["kept"])


def test_sign_sigmoid_grad_forward_and_surrogate_backward():
    p = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 3.0], dtype=F64, requires_grad=True)
    d = sign_sigmoid_grad(p)
    assert torch.equal(d, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0], dtype=F64))  # Eq. 5, P > 0
    g = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0], dtype=F64)
    d.backward(g)
    s = 1 / (1 + torch.exp(-p.detach()))
    assert torch.allclose(p.grad, g * torch.exp(-p.detach()) * s * s)  # Eq. 6


@pytest.mark.parametrize("warp_mask", ["paper", "inverted"])
@pytest.mark.parametrize("topk", [1, 4])
def test_dense_matches_loops(topk, warp_mask):
    q, k, v, qp, kp, image = _maps()
    m = dense_dynamic_attention(q, k, v, qp, kp, scale=SCALE, prune_scale=PRUNE_SCALE,
                                image=image, topk=topk, warp_mask=warp_mask)
    ref = loops(q, k, v, qp, kp, image=image, topk=topk, warp_mask=warp_mask)
    _assert_match(m, ref)
    assert m.formed == NK and 0 < int(m.kept.sum()) < 2 * NQ * NK  # some pruned, some kept


def test_dense_without_pruning_has_unit_confidence():
    q, k, v, _, _, image = _maps()
    ref = loops(q, k, v, None, None, image=image, topk=4)
    with_scores = dense_dynamic_attention(q, k, v, scale=SCALE, image=image, topk=4)
    _assert_match(with_scores, ref)
    assert torch.allclose(with_scores.conf, torch.ones_like(with_scores.conf))
    fast = dense_dynamic_attention(q, k, v, scale=SCALE, topk=None)  # through `attend`
    assert torch.allclose(fast.out, ref["out"])
    assert torch.equal(fast.conf, torch.ones_like(fast.conf)) and fast.warp is None
    assert fast.topk.shape == (2, NQ, 0) and (fast.kept == NK).all()


@pytest.mark.parametrize("warp_mask", ["paper", "inverted"])
@pytest.mark.parametrize("topk", [1, 4])
def test_sparse_matches_loops(topk, warp_mask):
    q, k, v, qp, kp, image = _maps()
    cands = _random_candidates(2, NQ, 7)
    m = sparse_dynamic_attention(q, k, v, qp, kp, cands, scale=SCALE, prune_scale=PRUNE_SCALE,
                                 image=image, topk=topk, warp_mask=warp_mask)
    _assert_match(m, loops(q, k, v, qp, kp, cands, image=image, topk=topk, warp_mask=warp_mask))
    assert m.formed == 7


def test_sparse_without_pruning_or_image():
    q, k, v, _, _, _ = _maps()
    cands = _random_candidates(2, NQ, 5)
    m = sparse_dynamic_attention(q, k, v, None, None, cands, scale=SCALE, topk=4)
    _assert_match(m, loops(q, k, v, None, None, cands, topk=4), image=False)
    assert torch.allclose(m.conf, torch.ones_like(m.conf))


def test_sparse_over_every_key_once_equals_dense():
    q, k, v, qp, kp, image = _maps()
    cands = torch.stack([torch.stack([torch.randperm(NK) for _ in range(NQ)]) for _ in range(2)])
    kwargs = dict(scale=SCALE, prune_scale=PRUNE_SCALE, image=image, topk=4)
    sparse = sparse_dynamic_attention(q, k, v, qp, kp, cands, **kwargs)
    dense = dense_dynamic_attention(q, k, v, qp, kp, **kwargs)
    for name in ("out", "conf", "warp"):
        assert torch.allclose(getattr(sparse, name), getattr(dense, name))
    assert torch.equal(sparse.topk, dense.topk) and torch.equal(sparse.kept, dense.kept)


def _prune_key(kp, qp, j_zero, j_neg):
    """Key j_zero gets P = 0 with every query, key j_neg gets P < 0 (qp made positive)."""
    qp = qp.abs() + 0.1
    kp = kp.clone()
    kp[:, :, j_zero // K_HW[1], j_zero % K_HW[1]] = 0
    kp[:, :, j_neg // K_HW[1], j_neg % K_HW[1]] = -1
    return qp, kp


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_pruned_links_carry_no_weight(form):
    q, k, v, qp, kp, image = _maps()
    qp, kp = _prune_key(kp, qp, 5, 17)
    cands = torch.tensor([5, 17, 5, 3, 11, 0])[None, None].expand(2, NQ, 6)

    def run(v, image):
        if form == "dense":
            return dense_dynamic_attention(q, k, v, qp, kp, scale=SCALE, image=image)
        return sparse_dynamic_attention(q, k, v, qp, kp, cands, scale=SCALE, image=image)

    before = run(v, image)
    v2, image2 = v.clone(), image.clone()
    for j in (5, 17):
        v2[:, :, j // K_HW[1], j % K_HW[1]] = 1e3
        image2[:, :, j // K_HW[1], j % K_HW[1]] = -1e3
    after = run(v2, image2)
    assert torch.equal(before.out, after.out) and torch.equal(before.warp, after.warp)
    assert torch.equal(before.conf, after.conf)
    assert (before.conf < 1).all()  # the pruned keys' softmax mass is missing


def test_non_candidate_keys_get_no_gradient():
    q, k, v, qp, kp, image = _maps()
    for t in (k, v, kp, image):
        t.requires_grad_(True)
    cands = torch.randint(0, 12, (2, NQ, 5))  # keys 12..23 are never candidates
    m = sparse_dynamic_attention(q, k, v, qp, kp, cands, scale=SCALE, image=image)
    (m.out.sum() + m.conf.sum() + (m.warp ** 2).sum()).backward()
    for t in (k, v, kp, image):
        flat = t.grad.flatten(2)
        assert torch.equal(flat[:, :, 12:], torch.zeros_like(flat[:, :, 12:]))
        assert flat[:, :, :12].abs().sum() > 0


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_every_link_pruned_gives_zeros_not_nan(form):
    q, k, v, qp, kp, image = _maps()
    kp = torch.zeros_like(kp, requires_grad=True)  # P = 0 everywhere: nothing kept
    q.requires_grad_(True)
    if form == "dense":
        m = dense_dynamic_attention(q, k, v, qp, kp, scale=SCALE, image=image)
    else:
        m = sparse_dynamic_attention(q, k, v, qp, kp, _random_candidates(2, NQ, 5),
                                     scale=SCALE, image=image)
    for t in (m.out, m.conf, m.warp):
        assert torch.equal(t, torch.zeros_like(t))
    assert (m.kept == 0).all()
    (m.out.sum() + m.conf.sum() + m.warp.sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(kp.grad).all()


def test_every_link_pruned_in_half_precision_gives_zeros():
    q, k, v, qp, _, image = (t.to(torch.float16) for t in _maps())
    kp = torch.zeros(2, 4, *K_HW, dtype=torch.float16)
    m = dense_dynamic_attention(q, k, v, qp, kp, scale=SCALE, image=image)
    assert m.warp.dtype == torch.float16 and torch.equal(m.warp, torch.zeros_like(m.warp))


def _prune_gradients(q, k, qp, kp, cands):
    """d(sum_i conf_i)/d(qp, kp) with dD/dP = sigmoid'(P) (Eq. 6): conf_i = sum_j D_ij A_ij."""
    b, wq, wk = q.shape[0], q.shape[-1], k.shape[-1]
    gqp, gkp = torch.zeros_like(qp), torch.zeros_like(kp)
    for bi in range(b):
        for i in range(cands.shape[1]):
            y, x = divmod(i, wq)
            js = cands[bi, i].tolist()
            c = torch.stack([SCALE * q[bi, :, y, x] @ k[bi, :, j // wk, j % wk] for j in js])
            a = torch.softmax(c, 0)
            for n, j in enumerate(js):
                p = PRUNE_SCALE * qp[bi, :, y, x] @ kp[bi, :, j // wk, j % wk]
                g = a[n] * torch.sigmoid(p) * (1 - torch.sigmoid(p)) * PRUNE_SCALE
                gqp[bi, :, y, x] += g * kp[bi, :, j // wk, j % wk]
                gkp[bi, :, j // wk, j % wk] += g * qp[bi, :, y, x]
    return gqp, gkp


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_pruning_gradient_is_the_sigmoid_surrogate(form):
    q, k, v, qp, kp, _ = _maps(q_hw=(2, 4), k_hw=(4, 2))
    qp.requires_grad_(True)
    kp.requires_grad_(True)
    if form == "dense":
        cands = torch.arange(8).expand(2, 8, 8)
        m = dense_dynamic_attention(q, k, v, qp, kp, scale=SCALE, prune_scale=PRUNE_SCALE)
    else:
        cands = _random_candidates(2, 8, 5, nk=8)
        m = sparse_dynamic_attention(q, k, v, qp, kp, cands, scale=SCALE,
                                     prune_scale=PRUNE_SCALE)
    m.conf.sum().backward()
    gqp, gkp = _prune_gradients(q, k, qp.detach(), kp.detach(), cands)
    assert torch.allclose(qp.grad, gqp) and torch.allclose(kp.grad, gkp)


def _gradcheck(form, warp_mask="paper", smooth=False):
    q, k, v, qp, kp, image = _maps(b=1, q_hw=(2, 2), k_hw=(2, 4), cqk=3, cv=2, cp=2)
    inputs = [t.requires_grad_(True) for t in (q, k, v, qp, kp)]
    cands = torch.tensor([[[0, 3, 3, 6], [1, 2, 7, 5], [4, 4, 0, 1], [6, 7, 2, 0]]])

    def f(q, k, v, qp, kp):
        if form == "dense":
            m = dense_dynamic_attention(q, k, v, qp, kp, scale=SCALE, prune_scale=PRUNE_SCALE,
                                        image=image, warp_mask=warp_mask)
        else:
            m = sparse_dynamic_attention(q, k, v, qp, kp, cands, scale=SCALE,
                                         prune_scale=PRUNE_SCALE, image=image,
                                         warp_mask=warp_mask)
        assert smooth or 0 < int(m.kept.sum()) < m.kept.numel() * m.formed
        return m.out, m.conf, m.warp

    if not smooth:  # D is a step: finite differences see it as constant; P is not an input
        qp, kp = qp.detach(), kp.detach()
        return torch.autograd.gradcheck(lambda q, k, v: f(q, k, v, qp, kp), inputs[:3])
    return torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("warp_mask", ["paper", "inverted"])
@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_gradcheck_through_values_keys_queries(form, warp_mask):
    assert _gradcheck(form, warp_mask)


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_gradcheck_through_pruning_chain(form, monkeypatch):
    """With D replaced by sigmoid(P) (smooth, so finite differences see it), every path from
    D to q, k, v, qp, kp through out, conf and warp checks against finite differences; the
    surrogate itself is checked in test_sign_sigmoid_grad_forward_and_surrogate_backward."""
    monkeypatch.setattr(ds, "sign_sigmoid_grad", torch.sigmoid)
    assert _gradcheck(form, smooth=True)


def test_inverted_warp_runs_over_exactly_the_pruned_links():
    q, k, v, qp, kp, _ = _maps()
    q.requires_grad_(True)
    qp.requires_grad_(True)
    support = {}
    for mode in ("paper", "inverted"):
        # identity image: warp channels read the warp row's mass on keys 0..2
        eye = torch.zeros(2, 3, NK, dtype=F64)
        for c in range(3):
            eye[:, c, c] = 1
        m = dense_dynamic_attention(q, k, v, qp, kp, scale=SCALE, image=eye.view(2, 3, *K_HW),
                                    warp_mask=mode)
        support[mode] = m.warp.flatten(2) > 0
        grad = torch.autograd.grad(m.warp.sum(), qp, allow_unused=True)[0]
        assert (grad is not None) == (mode == "paper")  # the official mask is a constant
    p = PRUNE_SCALE * torch.einsum("bcq,bck->bqk", qp.detach().flatten(2), kp.flatten(2))
    kept = (p[..., :3] > 0).transpose(1, 2)  # (B, 3 keys, Nq)
    assert torch.equal(support["paper"], kept)
    assert torch.equal(support["inverted"], ~kept)


def _inter_loops(topk, q_hw, k_hw):
    (hq, wq), wk = q_hw, k_hw[1]
    out = []
    for b in range(topk.shape[0]):
        for fy in range(2 * hq):
            for fx in range(2 * wq):
                row = []
                for r in topk[b, (fy // 2) * wq + fx // 2].tolist():
                    ry, rx = divmod(r, wk)
                    row += [(2 * ry + a) * 2 * wk + 2 * rx + c for a in (0, 1) for c in (0, 1)]
                out.append(row)
    return torch.tensor(out).view(topk.shape[0], 4 * hq * wq, -1)


def _inner_loops(topk, q_hw, k_hw):
    (hq, wq), (hk, wk) = q_hw, k_hw
    out = []
    for b in range(topk.shape[0]):
        for y in range(hq):
            for x in range(wq):
                row = []
                for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
                    ny, nx = min(max(y + dy, 0), hq - 1), min(max(x + dx, 0), wq - 1)
                    for r in topk[b, ny * wq + nx].tolist():
                        ky = min(max(r // wk - dy, 0), hk - 1)
                        kx = min(max(r % wk - dx, 0), wk - 1)
                        row.append(ky * wk + kx)
                out.append(row)
    return torch.tensor(out).view(topk.shape[0], hq * wq, -1)


def _sorted(x):
    return x.sort(-1).values


def test_inter_scale_candidates_hand_worked():
    # coarse queries 1x2, coarse keys 2x3; query 0 matched (1,1), query 1 matched (0,2)
    got = inter_scale_candidates(torch.tensor([[[4], [2]]]), (1, 2), (2, 3))
    first, second = [14, 15, 20, 21], [4, 5, 10, 11]  # 2x2 children on the 4x6 key grid
    expected = [first, first, second, second, first, first, second, second]  # 2x4 fine queries
    assert torch.equal(_sorted(got), torch.tensor([expected]))


def test_inner_scale_candidates_hand_worked():
    # queries 2x3, keys 3x4; matches (0,0) (1,1) (2,3) / (1,0) (2,2) (0,3)
    got = inner_scale_candidates(torch.tensor([[[0], [5], [11], [4], [10], [3]]]), (2, 3), (3, 4))
    expected = [[0, 4, 0, 1, 4],  # own, up (itself, moved down), down, left (itself), right
                [5, 9, 6, 1, 10],
                [11, 11, 3, 6, 10],  # up: (3,3) clipped to (2,3)
                [4, 4, 0, 5, 9],
                [10, 9, 6, 5, 2],
                [3, 11, 3, 11, 2]]  # down: (-1,3) clipped to (0,3)
    assert torch.equal(_sorted(got), _sorted(torch.tensor([expected])))


@pytest.mark.parametrize("k", [1, 4])
def test_candidates_match_loops(k):
    topk = torch.randint(0, 6, (2, 6, k))
    assert torch.equal(_sorted(inter_scale_candidates(topk, (2, 3), (3, 2))),
                       _sorted(_inter_loops(topk, (2, 3), (3, 2))))
    topk = torch.randint(0, 12, (2, 12, k))
    got = inner_scale_candidates(topk, (3, 4), (4, 3))
    assert got.shape == (2, 12, 5 * k)
    assert torch.equal(_sorted(got), _sorted(_inner_loops(topk, (3, 4), (4, 3))))


@pytest.mark.parametrize("k", [1, 4])
def test_score_and_kept_counts(k):
    q, k_, v, qp, kp, image = _maps(q_hw=(2, 2), k_hw=(2, 4))
    fq, fk = torch.randn(2, 5, 4, 4, dtype=F64), torch.randn(2, 5, 4, 8, dtype=F64)
    fv, fqp, fkp = (torch.randn(2, c, *hw, dtype=F64) for c, hw in
                    ((3, (4, 8)), (4, (4, 4)), (4, (4, 8))))
    with count_scores() as counted:
        dense = dense_dynamic_attention(q, k_, v, qp, kp, scale=SCALE, image=image, topk=k)
        inter = sparse_dynamic_attention(fq, fk, fv, fqp, fkp,
                                         inter_scale_candidates(dense.topk, (2, 2), (2, 4)),
                                         scale=SCALE, topk=k, kind="inter")
        inner = sparse_dynamic_attention(fq, fk, fv, fqp, fkp,
                                         inner_scale_candidates(inter.topk, (4, 4), (4, 8)),
                                         scale=SCALE, topk=k, kind="inner")
    assert counted.scores == {"dense_dynamic": 2 * 4 * 8, "inter": 2 * 16 * 4 * k,
                              "inner": 2 * 16 * 5 * k}
    assert counted.macs["dense_dynamic"] == 2 * 4 * 8 * (5 + 3 + 4 + 3)
    assert counted.macs["inner"] == 2 * 16 * 5 * k * (5 + 3 + 4)
    for name, m in (("dense_dynamic", dense), ("inter", inter), ("inner", inner)):
        assert counted.kept[name] == int(m.kept.sum())
        assert (m.kept <= m.formed).all()
    assert (dense.formed, inter.formed, inner.formed) == (8, 4 * k, 5 * k)


def test_bad_arguments_are_named():
    q, k, v, qp, kp, _ = _maps()
    with pytest.raises(ValueError, match="warp_mask 'bug'"):
        dense_dynamic_attention(q, k, v, qp, kp, scale=1.0, warp_mask="bug")
    with pytest.raises(ValueError, match="qp and kp"):
        dense_dynamic_attention(q, k, v, qp, None, scale=1.0)
    with pytest.raises(ValueError, match=r"v \(2, 3, 4, 6\)"):
        dense_dynamic_attention(q, k, v.transpose(2, 3), scale=1.0)
    with pytest.raises(ValueError, match="candidates"):
        sparse_dynamic_attention(q, k, v, qp, kp, torch.zeros(2, 5, 3, dtype=torch.long),
                                 scale=1.0)
    with pytest.raises(ValueError, match="topk=9"):
        sparse_dynamic_attention(q, k, v, qp, kp, torch.zeros(2, NQ, 3, dtype=torch.long),
                                 scale=1.0, topk=9)
