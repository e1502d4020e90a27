"""DynaST, "DynaST: Dynamic Sparse Transformer for Exemplar-Guided Image Generation" (ECCV 2022).

checks: scales, attended levels, settings checks (no torch); embedding: Eq. 1, 16-17; blocks:
the Dense Attn / DynaST blocks and the peers' blocks (Eq. 2-9); network: the generator;
losses: Eq. 10, 11, 14, 15 and the official recipe; data: pairs and batches; task, sampling,
evaluation: the pipeline's jobs.
"""

from sparsegen.models.dynast import checks
from sparsegen.papers import PaperPackage


def _training_networks(settings: dict) -> list[str]:
    return ["vgg19_normalised" if settings["model"]["task"] == "style" else "vgg19_cocosnet"]


def _evaluation_networks(settings: dict) -> list[str]:
    if settings["model"]["task"] == "style":  # Fig. 8 left: Eq. 11's l_s and StyTr2's
        return ["vgg19_normalised"]
    # Tables 1-2: pytorch-fid's Inception (+ clean-fid's), CoCosNet's VGG for Table 2.
    return ["inception_fid_pytorch", "inception_fid_torchscript", "vgg19_cocosnet"]


PAPER = PaperPackage(
    name="dynast",
    title="DynaST: Dynamic Sparse Transformer for Exemplar-Guided Image Generation",
    package=__name__,
    loss_columns=("g", "d", "warp", "vgg", "kept_fraction"),
    figures="sparsegen.figures.dynast",
    problems=checks.problems,
    training_networks=_training_networks,
    evaluation_networks=_evaluation_networks,
    bench_module="sparsegen.bench.dynast",
)
