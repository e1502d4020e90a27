"""FID between two image sets, in clean-fid's `legacy_pytorch` (== pytorch-fid) and `clean` modes,
and iLAT's `imagenet` mode.

Image decoding and resizing to 299 follow clean-fid (`cleanfid.resize.build_resizer(mode)`
applied to each decoded uint8 image); the Inception network is built here from the verified
local file, because clean-fid's own loaders download (`torch.hub` for legacy_pytorch, a fixed
/tmp path for clean). The Fréchet distance is computed in float64 with scipy.

`fid_inception_imagenet` is the FID of iLAT's evaluation code (ewrfcas/iLAT `src/metrics.py`,
`utils/inception.py`): torchvision's ImageNet classifier Inception-v3 (not the TF FID network),
images in [0, 1] resized to 299 bilinearly (torch, align_corners=False; the same resize as
`legacy_pytorch`), torchvision's `transform_input` affine, pool3 features. Its numbers do not
compare with any TF-FID.

Random-init extractors (weights mode random, or auto without the file) use the pytorch-fid
Inception architecture (the torchvision ImageNet one in `imagenet` mode) with seeded
Kaiming-normal weights; for `fid_clean` this is a stand-in for the TorchScript network, whose
architecture ships only inside the file.

Options of the metrics: `input_size` (the Inception input side; 299 is the FID protocol, a
smaller side only makes CPU smoke runs affordable and is recorded as `protocol.input_size`),
`cache_dir` with `reference_digests` (the reference set's features are stored there under a
key hashed from the files' sha256 list, the mode, the extractor fingerprint and the input side,
so runs sharing a real set compute its features once), and `sets` (how each set was drawn,
e.g. seeds and subset hashes, recorded as `protocol.sets`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import linalg
from torch import nn

from sparsegen.io import atomic_path
from sparsegen.metrics.inputs import ImageSet
from sparsegen.metrics.records import Measurement
from sparsegen.metrics.registry import MetricContext, import_needing_torchvision, register
from sparsegen.provenance import stable_hash
from sparsegen.weights import RANDOM_INIT, ResolvedWeights

RANDOM_SEED = 0
FEATURE_DIM = 2048
INCEPTION_SIZE = 299  # the FID protocol's Inception input side
# clean-fid's resize of each mode: (library, filter) for cleanfid.resize.make_resizer.
RESIZE_FILTER = {"legacy_pytorch": ("PyTorch", "bilinear"), "clean": ("PIL", "bicubic"),
                 "imagenet": ("PyTorch", "bilinear")}
CLEANFID_MODES = ("legacy_pytorch", "clean")  # modes cleanfid.resize.build_resizer knows
RESIZE = {
    "legacy_pytorch": "torch F.interpolate bilinear to {side}x{side}, align_corners=False, "
                      "float [0, 255] (clean-fid legacy_pytorch)",
    "clean": "PIL bicubic to {side}x{side} per channel in float mode 'F', no re-quantisation "
             "(clean-fid clean)",
    "imagenet": "torch F.interpolate bilinear to {side}x{side}, align_corners=False, float "
                "(iLAT utils/inception.py; as clean-fid legacy_pytorch)",
}
IMAGENET_WEIGHTS = "inception_v3_imagenet"  # torchvision's ImageNet Inception-v3 file
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_VERSION = 1  # bump when the cached file's content changes meaning

SQRTM_FULL = "scipy.linalg.sqrtm(S1 S2), real part, eps 1e-6 if singular"
SQRTM_LOW_RANK = ("nuclear norm of the centred cross-Gram A1 A2^T (exact; used when a set has "
                  "no more samples than feature dimensions)")

Extractor = Callable[[torch.Tensor], torch.Tensor]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64.

    When the product is singular (sqrtm not finite), eps * I is added to both covariances;
    the (numerically) imaginary part of the square root is dropped, as clean-fid/StyleGAN3 do."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"feature statistics differ in shape: {mu1.shape}/{s1.shape} vs "
                         f"{mu2.shape}/{s2.shape}")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


def trace_sqrt_low_rank(f1: np.ndarray, f2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) from the features themselves (exact for any sample counts).

    With centred features A1, A2 and S_i = A_i^T A_i / (n_i - 1), the non-zero eigenvalues of
    S1 S2 are the squared singular values of A1 A2^T / sqrt((n1 - 1)(n2 - 1)), so the trace is
    that matrix's nuclear norm: an (n1 x n2) SVD instead of a D x D sqrtm, cheap when one set
    is small."""
    a1, a2 = f1 - f1.mean(0), f2 - f2.mean(0)
    cross = a1 @ a2.T / np.sqrt((len(f1) - 1) * (len(f2) - 1))
    return float(np.linalg.svd(cross, compute_uv=False).sum())


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> tuple[float, str]:
    """FID of two feature matrices (N, D) with unbiased (N - 1) covariances, as np.cov, and
    the route taken: scipy sqrtm when both sets have more samples than dimensions (the
    FID-50k regime, as pytorch-fid/clean-fid), else the exact low-rank trace (sqrtm of a
    singular D x D product is slow and inaccurate there)."""
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    for name, f in (("first", f1), ("second", f2)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 feature vectors per set; the {name} set "
                             f"has shape {f.shape}")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    if min(len(f1), len(f2)) > f1.shape[1]:
        return frechet_distance(mu1, s1, mu2, s2), SQRTM_FULL
    diff = mu1 - mu2
    return (float(diff @ diff + np.trace(s1) + np.trace(s2)
                  - 2 * trace_sqrt_low_rank(f1, f2)), SQRTM_LOW_RANK)


def _seeded_kaiming_(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()


# torchvision Inception3 modules from the input to the 2048-d pool3 output, as pytorch-fid.
_POOL3_PATH = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool",
)



def _load_or_seed(net: nn.Module, weights: ResolvedWeights, kind: str) -> None:
    """The verified file's state dict into `net`, or the seeded random init without one."""
    if weights.path is None:
        _seeded_kaiming_(net, RANDOM_SEED)
        return
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{weights.path}: not a {kind} state dict "
                         f"({str(e).splitlines()[0]})") from None

class PytorchFIDInception(nn.Module):
    """pytorch-fid's FID Inception (torchvision Inception-v3 with clean-fid's FIDInception
    blocks, 1008 classes) returning 2048-d pool3 features of a [-1, 1] batch at 299x299."""

    def __init__(self, weights: ResolvedWeights) -> None:
        super().__init__()
        ip = import_needing_torchvision("cleanfid.inception_pytorch")
        from torchvision.models import inception_v3

        with torch.random.fork_rng(devices=[]):  # default init must not touch the global RNG
            net = inception_v3(weights=None, aux_logits=False, num_classes=1008,
                               init_weights=False)
            net.Mixed_5b = ip.FIDInceptionA(192, pool_features=32)
            net.Mixed_5c = ip.FIDInceptionA(256, pool_features=64)
            net.Mixed_5d = ip.FIDInceptionA(288, pool_features=64)
            net.Mixed_6b = ip.FIDInceptionC(768, channels_7x7=128)
            net.Mixed_6c = ip.FIDInceptionC(768, channels_7x7=160)
            net.Mixed_6d = ip.FIDInceptionC(768, channels_7x7=160)
            net.Mixed_6e = ip.FIDInceptionC(768, channels_7x7=192)
            net.Mixed_7b = ip.FIDInceptionE_1(1280)
            net.Mixed_7c = ip.FIDInceptionE_2(2048)
        _load_or_seed(net, weights, "pytorch-fid Inception")
        self.net = net  # upstream key layout; the fc head is loaded but not used
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in _POOL3_PATH:
            x = getattr(self.net, name)(x)
        return x.flatten(1)


class ImageNetInception(nn.Module):
    """torchvision's ImageNet Inception-v3 (`inception_v3(pretrained=True)`, iLAT's FID network)
    returning 2048-d pool3 features of a [0, 1] batch at 299x299, after torchvision's
    `transform_input` affine (ImageNet mean/std normalisation written for [-1, 1] inputs)."""

    def __init__(self, weights: ResolvedWeights) -> None:
        super().__init__()
        models = import_needing_torchvision("torchvision.models")
        with torch.random.fork_rng(devices=[]):  # default init must not touch the global RNG
            net = models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                      transform_input=False)
        _load_or_seed(net, weights, "torchvision Inception-v3")
        self.net = net  # torchvision key layout; AuxLogits and fc are loaded but not used
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("scale", std / 0.5)
        self.register_buffer("shift", (mean - 0.5) / 0.5)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale + self.shift
        for name in _POOL3_PATH:
            x = getattr(self.net, name)(x)
        return x.flatten(1)


def build_extractor(mode: str, weights: ResolvedWeights, device: torch.device
                    ) -> tuple[Extractor, str]:
    """Callable mapping a (B, 3, 299, 299) float batch in [0, 255] to (B, 2048) features,
    and its fingerprint for the record."""
    random_fp = f"{weights.name}:{RANDOM_INIT}:kaiming-normal-seed{RANDOM_SEED}"
    if mode == "imagenet":
        imagenet = ImageNetInception(weights).to(device)
        fp = random_fp if weights.path is None else f"{weights.name}:sha256:{weights.sha256}"
        return (lambda x: imagenet(x / 255).reshape(x.shape[0], FEATURE_DIM)), fp
    if weights.path is None:
        net = PytorchFIDInception(weights).to(device)
        stand_in = " (stand-in: pytorch-fid Inception architecture)" if mode == "clean" else ""
        fp = random_fp + stand_in
    elif mode == "legacy_pytorch":
        net = PytorchFIDInception(weights).to(device)
        fp = f"{weights.name}:sha256:{weights.sha256}"
    else:
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated; the file is one
                warnings.simplefilter("ignore", DeprecationWarning)
                script = torch.jit.load(str(weights.path), map_location=device).eval()
            net = script.layers
        except (RuntimeError, AttributeError) as e:
            raise ValueError(f"{weights.path}: not the TorchScript FID Inception "
                             f"({str(e).splitlines()[0]})") from None
        fp = f"{weights.name}:sha256:{weights.sha256}"
    if mode == "legacy_pytorch":
        def extract(x: torch.Tensor) -> torch.Tensor:
            return net(x / 255 * 2 - 1).reshape(x.shape[0], FEATURE_DIM)  # pytorch-fid input
    else:
        def extract(x: torch.Tensor) -> torch.Tensor:
            return net((x - 128) / 128).reshape(x.shape[0], FEATURE_DIM)  # clean-fid input
    return extract, fp


def resize_description(mode: str, side: int = INCEPTION_SIZE) -> str:
    return RESIZE[mode].format(side=side)


def resizer(mode: str, side: int = INCEPTION_SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """clean-fid's resize for `mode`: uint8 (H, W, 3) -> float32 (side, side, 3) in [0, 255].

    299 in clean-fid's modes is `cleanfid.resize.build_resizer(mode)` itself; another side, or
    the `imagenet` mode, is the same resizer (`make_resizer` with the mode's library and
    filter, no re-quantisation) to that side."""
    from cleanfid.resize import build_resizer, make_resizer

    if mode not in RESIZE_FILTER:
        raise ValueError(f"FID mode {mode!r} is not one of {sorted(RESIZE_FILTER)}")
    if not isinstance(side, int) or isinstance(side, bool) or side < 75:
        raise ValueError(f"Inception input side must be an integer >= 75 (the smallest input "
                         f"Inception-v3 accepts), got {side!r}")
    with warnings.catch_warnings():  # the legacy_pytorch builder silences warnings globally
        if side == INCEPTION_SIZE and mode in CLEANFID_MODES:
            return build_resizer(mode)
        library, filter_name = RESIZE_FILTER[mode]
        return make_resizer(library, False, filter_name, (side, side))


def image_features(images: ImageSet, extract: Extractor, mode: str, ctx: MetricContext,
                   side: int = INCEPTION_SIZE) -> tuple[np.ndarray, list[list[int]]]:
    """(N, 2048) float64 features and the distinct (H, W) sizes met."""
    resize = resizer(mode, side)
    feats, sizes = [], set()
    with torch.inference_mode():
        for batch in images.batches(ctx.batch_size):
            sizes.update(img.shape[:2] for img in batch)
            x = torch.from_numpy(np.stack([resize(img).transpose(2, 0, 1) for img in batch]))
            feats.append(extract(x.to(ctx.device, torch.float32)).double().cpu().numpy())
    return np.concatenate(feats), sorted(list(s) for s in sizes)


def feature_cache_key(digests: Sequence[str], mode: str, extractor: str, side: int) -> str:
    """Content address of a reference set's features: the files' sha256 list (in order), the
    mode, the extractor fingerprint and the Inception input side."""
    return stable_hash({"version": CACHE_VERSION, "files_sha256": list(digests), "mode": mode,
                        "extractor": extractor, "input_size": side}, length=24)


def cached_image_features(images: ImageSet, digests: Sequence[str], extract: Extractor,
                          extractor: str, mode: str, ctx: MetricContext, side: int,
                          cache_dir: Path) -> tuple[np.ndarray, list[list[int]], dict[str, Any]]:
    """`image_features` of a file set, read from `cache_dir/<mode>_<side>_<key>.npz` when a
    run with the same files (by sha256), mode, extractor and side stored them; otherwise
    computed and stored (atomically). Returns features, sizes and {key, file, hit}."""
    if len(digests) != len(images):
        raise ValueError(f"reference_digests lists {len(digests)} sha256 values for "
                         f"{len(images)} images ({images.origin})")
    key = feature_cache_key(digests, mode, extractor, side)
    path = Path(cache_dir) / f"{mode}_{side}_{key}.npz"
    info = {"key": key, "file": str(path)}
    if path.is_file():
        try:
            with np.load(path) as stored:
                feats, sizes = stored["features"], stored["sizes"].tolist()
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: unreadable FID feature cache ({e}); delete it") from None
        if feats.shape != (len(images), FEATURE_DIM):
            raise ValueError(f"{path}: cached features have shape {feats.shape}, expected "
                             f"({len(images)}, {FEATURE_DIM}); delete it")
        return feats.astype(np.float64), sizes, {**info, "hit": True}
    feats, sizes = image_features(images, extract, mode, ctx, side)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # The extractor computes in float32, so float32 storage loses nothing.
        np.savez(f, features=feats.astype(np.float32), sizes=np.asarray(sizes, dtype=np.int64))
    return feats, sizes, {**info, "hit": False}


def _fid(a: Any, b: Any, ctx: MetricContext, mode: str, weights_name: str, *,
         input_size: int = INCEPTION_SIZE, cache_dir: str | Path | None = None,
         reference_digests: Sequence[str] | None = None,
         sets: dict[str, Any] | None = None) -> Measurement:
    image_sets = {"a": ImageSet.of(a, "images"), "b": ImageSet.of(b, "references")}
    for key, s in image_sets.items():
        if len(s) < 2:
            raise ValueError(f"FID needs at least 2 images per set; set {key} "
                             f"({s.origin}) has {len(s)}")
    if (cache_dir is None) != (reference_digests is None):
        raise ValueError("the reference feature cache needs both cache_dir and "
                         "reference_digests")
    resizer(mode, input_size)  # checks the side before any network is built
    weights = ctx.resolve(weights_name)
    extract, fp = build_extractor(mode, weights, ctx.device)
    feats, sizes, extra = {}, {}, {}
    for key, s in image_sets.items():
        if key == "b" and cache_dir is not None:
            feats[key], sz, extra["reference_cache"] = cached_image_features(
                s, reference_digests, extract, fp, mode, ctx, input_size, Path(cache_dir))
        else:
            feats[key], sz = image_features(s, extract, mode, ctx, input_size)
        sizes[key] = sz[0] if len(sz) == 1 else "mixed"
    value, route = fid_from_features(feats["a"], feats["b"])
    protocol = {"mode": mode, "extractor": fp, "features": "pool3 2048-d",
                "resize": resize_description(mode, input_size), "input_size": input_size,
                "file_format": {k: s.file_format for k, s in image_sets.items()},
                "n_a": len(image_sets["a"]), "n_b": len(image_sets["b"]), "image_size": sizes,
                "covariance": "unbiased (N-1)", "trace_sqrt": route}
    if sets:
        protocol["sets"] = sets
    return Measurement(value=value, n_samples=len(image_sets["a"]), extractor=weights,
                       protocol=protocol,
                       extra={"inputs": {k: s.origin for k, s in image_sets.items()}, **extra})


@register("fid_legacy_pytorch", higher_is_better=False,
          description="FID as pytorch-fid computes it (clean-fid mode legacy_pytorch): "
          "pytorch-fid Inception pool3, torch bilinear resize to 299")
def fid_legacy_pytorch(a: Any, b: Any, ctx: MetricContext, **options: Any) -> Measurement:
    return _fid(a, b, ctx, "legacy_pytorch", "inception_fid_pytorch", **options)


@register("fid_clean", higher_is_better=False,
          description="clean-fid mode clean: TorchScript TF-FID Inception pool3, PIL bicubic "
          "resize to 299")
def fid_clean(a: Any, b: Any, ctx: MetricContext, **options: Any) -> Measurement:
    return _fid(a, b, ctx, "clean", "inception_fid_torchscript", **options)


@register("fid_inception_imagenet", higher_is_better=False,
          description="FID as iLAT's code computes it: torchvision ImageNet Inception-v3 pool3 "
          "(not the TF FID network), [0, 1] images, torch bilinear resize to 299")
def fid_inception_imagenet(a: Any, b: Any, ctx: MetricContext, **options: Any) -> Measurement:
    return _fid(a, b, ctx, "imagenet", IMAGENET_WEIGHTS, **options)
