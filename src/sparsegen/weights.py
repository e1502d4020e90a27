"""Pretrained-weights manifest: where each file comes from, how it is verified, how it is loaded.

Nothing here downloads on its own: `fetch` is called only by the `fetch-weights` step. Loading
goes through `resolve`, which honours the `weights:` setting:

- ``pretrained``: the verified file must be present, otherwise a clear error says how to get it;
- ``random``: a seeded random initialisation, results marked non-comparable;
- ``auto``: the verified file when present, random initialisation otherwise.

Entries without a published sha256 get one pinned at their first fetch (`<file>.fetched.json`
beside it): a file that changes afterwards fails verification. The authors' released models
(`stylenat_*`, `stya2k_*`) are loaded by the papers' converters (`sparsegen.released`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from sparsegen.download import DownloadError, check_file, download
from sparsegen.io import atomic_path, write_json

RANDOM_INIT = "random-init"
STYA2K_COMMIT = "70b58dfdf6c249a0c621d8b849945272671dce74"  # LearningHx/StyA2K, its one commit
MODES = ("auto", "pretrained", "random")


class WeightsError(RuntimeError):
    """A weights file is missing, fails verification or cannot be downloaded."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    url: str
    description: str
    licence: str
    used_by: tuple[str, ...]
    mirrors: tuple[str, ...] = ()
    size: int | None = None
    # Full sha256 where it is published; otherwise the 8-hex prefix that torch.hub file names
    # carry. Files with neither are accepted on first fetch and their hash is recorded.
    sha256: str | None = None
    sha256_prefix: str | None = None
    manual: str | None = None  # instructions when the URL needs a browser or a form


MANIFEST: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            name="vgg19_normalised",
            filename="vgg_normalised.pth",
            url="https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0/vgg_normalised.pth",
            mirrors=("https://drive.google.com/file/d/1BinnwM5AmIcVubr16tPTqxMjUCE8iu5M",),
            description="AdaIN's normalised VGG-19 (Caffe weights, 1x1 preprocessing conv first); "
            "StyA2K encoder and the StyTr2 content/style-loss protocol",
            licence="MIT (naoto0804/pytorch-AdaIN)",
            used_by=("stya2k encoder", "content_loss_stytr2", "style_loss_stytr2"),
            manual="If the GitHub release is unreachable, download the Google Drive mirror in a "
            "browser and save it as {dest}.",
        ),
        WeightSpec(
            name="vgg19_torchvision",
            filename="vgg19-dcbb9e9d.pth",
            url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            size=574_673_361,
            sha256="dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
            sha256_prefix="dcbb9e9d",
            description="torchvision VGG-19 (IMAGENET1K_V1); optional StyA2K encoder",
            licence="BSD-3-Clause (torchvision); ImageNet terms",
            used_by=("stya2k encoder (encoder: torchvision)",),
        ),
        WeightSpec(
            name="vgg19_cocosnet",
            filename="vgg19_conv.pth",
            url="https://drive.google.com/file/d/1xc7CBEsn45a3Pc3K9Tfh5wxKOx2LyC41",
            mirrors=("https://drive.google.com/file/d/1fp7DAiXdf0Ay-jANb8f0RHYLTRyjNv4m",),
            description="CoCosNet's Caffe VGG-19 conv weights (keys conv1_1 ... conv5_4; input "
            "BGR minus mean, x255): DynaST/CoCosNet training losses and the CoCosNet "
            "semantic-consistency/style-relevance metrics",
            licence="MIT (microsoft/CoCosNet); Apache-2.0 (Huage001/DynaST)",
            used_by=("dynast losses", "semantic_consistency_cocosnet",
                     "style_relevance_color_cocosnet", "style_relevance_texture_cocosnet"),
            manual="Google Drive needs a browser: open the DynaST link "
            "https://drive.google.com/file/d/1xc7CBEsn45a3Pc3K9Tfh5wxKOx2LyC41 (or CoCosNet's "
            "https://drive.google.com/file/d/1fp7DAiXdf0Ay-jANb8f0RHYLTRyjNv4m), download "
            "vgg19_conv.pth and save it as {dest}.",
        ),
        WeightSpec(
            name="alexnet_torchvision",
            filename="alexnet-owt-7be5be79.pth",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            size=244_408_911,
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            sha256_prefix="7be5be79",
            description="torchvision AlexNet, the LPIPS-Alex backbone (linear heads ship in the "
            "lpips wheel)",
            licence="BSD-3-Clause (torchvision); ImageNet terms",
            used_by=("lpips_alex",),
        ),
        WeightSpec(
            name="inception_fid_pytorch",
            filename="pt_inception-2015-12-05-6726825d.pth",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            sha256_prefix="6726825d",
            description="pytorch-fid port of the TF FID Inception (clean-fid legacy_pytorch mode)",
            licence="Apache-2.0 (pytorch-fid)",
            used_by=("fid (legacy_pytorch)",),
        ),
        WeightSpec(
            name="inception_fid_torchscript",
            filename="inception-2015-12-05.pt",
            url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
            "inception-2015-12-05.pt",
            description="TorchScript TF FID Inception (clean-fid clean mode)",
            licence="Apache-2.0 (TensorFlow model)",
            used_by=("fid (clean)",),
        ),
        WeightSpec(
            name="vgg16_torchvision",
            filename="vgg16-397923af.pth",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256_prefix="397923af",
            description="torchvision VGG-16 (IMAGENET1K_V1), the LPIPS-VGG backbone (linear heads "
            "ship in the lpips wheel): taming's and iLAT's pose-tokenizer perceptual loss",
            licence="BSD-3-Clause (torchvision); ImageNet terms",
            used_by=("ilat pose tokenizers (loss.perceptual: lpips)",),
        ),
        WeightSpec(
            name="inception_v3_imagenet",
            filename="inception_v3_google-0cc3c7bd.pth",
            url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
            sha256_prefix="0cc3c7bd",
            description="torchvision ImageNet Inception-v3 (IMAGENET1K_V1): the FID features of "
            "iLAT's official metrics (pool3 of inception_v3(pretrained=True), not the TF FID "
            "weights)",
            licence="Apache-2.0 (TensorFlow model); BSD-3-Clause (torchvision)",
            used_by=("fid_inception_imagenet",),
        ),
        WeightSpec(
            name="taming_vqgan_f16_16384",
            filename="taming_vqgan_imagenet_f16_16384_last.ckpt",
            url="https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/"
            "?p=%2Fckpts%2Flast.ckpt&dl=1",
            description="taming-transformers' ImageNet VQGAN f16, 16384 codes (ckpts/last.ckpt, "
            "a Lightning checkpoint whose state_dict holds encoder/decoder/quantize/"
            "quant_conv/post_quant_conv and loss.*): the start of iLAT's pose tokenizers",
            licence="MIT (CompVis/taming-transformers)",
            used_by=("ilat pose tokenizers (tokenizer.init: taming_f16_16384)",),
            manual="If the direct link fails, open "
            "https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/ in a browser, download "
            "ckpts/last.ckpt and save it as {dest}.",
        ),
        # The authors' released models (sample-only `released*` variants; converters in the
        # papers' `released` modules). No published hashes: the first fetch records one.
        WeightSpec(
            name="stylenat_ffhq256",
            filename="FFHQ256_940k_flip.pt",
            url="https://shi-labs.com/projects/stylenat/checkpoints/FFHQ256_940k_flip.pt",
            description="StyleNAT authors' FFHQ-256 generator (step 940k, trained with flips; "
            "keys g, g_ema, args; legacy split-head attention)",
            licence="MIT (SHI-Labs/StyleNAT)",
            used_by=("stylenat released_ffhq256",),
        ),
        WeightSpec(
            name="stylenat_ffhq1024",
            filename="FFHQ1024_700k.pt",
            url="https://shi-labs.com/projects/stylenat/checkpoints/FFHQ1024_700k.pt",
            description="StyleNAT authors' FFHQ-1024 generator (step 700k; keys g, g_ema, args; "
            "legacy split-head attention)",
            licence="MIT (SHI-Labs/StyleNAT)",
            used_by=("stylenat released_ffhq1024",),
        ),
        WeightSpec(
            name="dynast_deepfashion",
            filename="dynast_deepfashion_latest_net_G.pth",
            url="https://drive.google.com/file/d/1UJ9xsQBBWZEXOz-jizerR4Qjo7n1kYmy",
            description="DynaST authors' DeepFashion generator (the file test_deepfashion.sh "
            "loads as checkpoints/deepfashion/latest_net_G.pth)",
            licence="Apache-2.0 (Huage001/DynaST)",
            used_by=("dynast released",),
            manual="Google Drive needs a browser: open "
            "https://drive.google.com/file/d/1UJ9xsQBBWZEXOz-jizerR4Qjo7n1kYmy, download the "
            "generator and save it as {dest}.",
        ),
        *(WeightSpec(
            name=f"ilat_ffhq_{key}",
            filename=f"ilat_ffhq_{key}.pth",
            url=f"https://drive.google.com/file/d/{drive}",
            description=f"iLAT authors' FFHQ face-editing {what} (ewrfcas/iLAT README)",
            licence="none stated (ewrfcas/iLAT)",
            used_by=("ilat released_ffhq",),
            manual=f"Google Drive needs a browser: open https://drive.google.com/file/d/{drive}, "
            "download the checkpoint and save it as {dest}.",
        ) for key, drive, what in (
            ("sketch_vqgan", "1oz34ABOmukoQ8fV02A8bjumtKe1g5ONQ", "sketch VQGAN"),
            ("tsvqgan", "1pDEs-43JNd30W-ptQhKWSrT5emN3wn6z", "image TS-VQGAN"),
            ("transformer", "1jeF5F6RzCgLC7-jccgp0eWdJOsNmSqD8", "transformer"))),
        *(WeightSpec(
            name=f"stya2k_{module.lower()}",
            filename=f"latest_net_{module}.pth",
            url=f"https://raw.githubusercontent.com/LearningHx/StyA2K/{STYA2K_COMMIT}/"
            f"checkpoints/A2K/latest_net_{module}.pth",
            size=size,
            description=f"StyA2K authors' trained {what} (official checkpoints/A2K, "
            f"commit {STYA2K_COMMIT[:7]})",
            licence="none stated (LearningHx/StyA2K has no LICENSE file)",
            used_by=("stya2k released",),
        ) for module, what, size in (
            ("A2K", "relu3_1 A2K module", 2_111_249),
            ("transform", "relu4_1/relu5_1 A2K modules and F5 conv", None),
            ("decoder", "decoder", None))),
    )
}


def get_spec(name: str) -> WeightSpec:
    try:
        return MANIFEST[name]
    except KeyError:
        raise WeightsError(
            f"unknown weights {name!r}; the manifest has: {', '.join(sorted(MANIFEST))}"
        ) from None


def _hash_cache(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _fetch_record(path: Path) -> Path:
    return path.with_name(path.name + ".fetched.json")


def _pinned_sha256(path: Path) -> str | None:
    """The sha256 recorded when the file was fetched (entries without a published hash)."""
    record = _fetch_record(path)
    try:
        return json.loads(record.read_text())["sha256"] if record.exists() else None
    except (ValueError, KeyError):
        raise WeightsError(f"{record}: unreadable fetch record; delete it and {path.name} "
                           "and fetch again") from None


def _cached_sha256(path: Path) -> str | None:
    """Hash recorded beside the file at its current size and mtime (verification is slow)."""
    cache = _hash_cache(path)
    if not cache.exists():
        return None
    st = path.stat()
    try:
        rec = json.loads(cache.read_text())
        if rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns:
            return rec["sha256"]
    except (ValueError, KeyError):
        pass
    return None


def _store_sha256(path: Path, digest: str) -> None:
    st = path.stat()
    try:
        with atomic_path(_hash_cache(path)) as tmp:
            tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                       "sha256": digest}))
    except OSError:
        pass  # read-only weights folder: the hash is recomputed next time


def verify(spec: WeightSpec, path: Path) -> str:
    """Check size and hash of `path` against `spec`; return its sha256.

    The hash is cached beside the file (keyed by size and mtime): hashing 500 MB each time a
    job starts would dominate short runs."""
    if not path.is_file():
        raise WeightsError(f"{path}: weights file for {spec.name!r} not found")
    digest = _cached_sha256(path)
    if digest is None:
        try:
            digest = check_file(path, size=spec.size)
        except DownloadError as e:
            raise WeightsError(f"{e} ({spec.name}, {spec.url})") from None
        _store_sha256(path, digest)
    pinned = _pinned_sha256(path) if spec.sha256 is None else None
    if pinned is not None and digest != pinned:
        raise WeightsError(f"{path}: sha256 {digest} differs from the one recorded when it was "
                           f"fetched ({pinned}, {_fetch_record(path).name}); delete both files "
                           f"and fetch {spec.name} again")
    if spec.sha256 is not None and digest != spec.sha256:
        raise WeightsError(f"{path}: sha256 {digest}, expected {spec.sha256} ({spec.name})")
    if spec.sha256_prefix is not None and not digest.startswith(spec.sha256_prefix):
        raise WeightsError(
            f"{path}: sha256 {digest} does not start with {spec.sha256_prefix} ({spec.name})")
    return digest


@dataclass(frozen=True)
class ResolvedWeights:
    """What a network was (or will be) initialised from; goes into every result record."""

    name: str
    path: Path | None
    sha256: str  # file hash, or RANDOM_INIT

    @property
    def pretrained(self) -> bool:
        return self.path is not None

    def describe(self) -> dict[str, str]:
        return {"weights": self.name, "sha256": self.sha256,
                "path": str(self.path) if self.path else RANDOM_INIT}


def resolve(name: str, mode: str, weights_dir: str | Path) -> ResolvedWeights:
    """Decide between the verified pretrained file and random initialisation (see module doc)."""
    if mode not in MODES:
        raise WeightsError(f"weights: {mode!r} is not one of {', '.join(MODES)}")
    spec = get_spec(name)
    path = Path(weights_dir) / spec.filename
    if mode == "random":
        return ResolvedWeights(name, None, RANDOM_INIT)
    if path.exists():
        return ResolvedWeights(name, path, verify(spec, path))
    if mode == "pretrained":
        raise WeightsError(
            f"weights: pretrained needs {path} ({spec.description}). Fetch it with "
            f"`python -m sparsegen fetch weights --name {name} --dest {weights_dir}` "
            f"or download {spec.url} and save it there."
        )
    return ResolvedWeights(name, None, RANDOM_INIT)


def fetch(name: str, dest_dir: str | Path, timeout: float = 60.0) -> Path:
    """Download one manifest entry into `dest_dir`, verified, moved into place atomically.

    A verified file already present is kept. Failures raise WeightsError saying what to
    download by hand and where to put it."""
    spec = get_spec(name)
    dest = Path(dest_dir) / spec.filename
    if dest.exists():
        verify(spec, dest)
        return dest
    errors = []
    for url in (spec.url, *spec.mirrors):
        if "drive.google.com" in url:
            errors.append(f"{url}: Google Drive needs a browser")
            continue
        try:
            digest = download(url, dest, timeout=timeout, size=spec.size, sha256=spec.sha256,
                              sha256_prefix=spec.sha256_prefix)
            _store_sha256(dest, digest)
            if spec.sha256 is None:  # no published hash: pin the first one
                write_json(_fetch_record(dest), {
                    "name": spec.name, "url": url, "sha256": digest, "size": dest.stat().st_size,
                    "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            return dest
        except DownloadError as e:
            errors.append(str(e))
    hint = (spec.manual or "Download it by hand and save it as {dest}.").format(dest=dest)
    raise WeightsError(
        f"could not fetch weights {name!r} ({spec.description}).\n  "
        + "\n  ".join(errors) + f"\n{hint}"
    )
