"""StyA2K, "All-to-key Attention for Arbitrary Style Transfer" (ICCV 2023).

network: encoder, transforms, decoder (`StyA2KNet`, `build_network`); transforms: A2K and the
Table 1 peers; losses: Eq. 14-19; task: the `TrainTask` and `load_model`; sampling: evaluation
samples and timing; evaluation: the Sec. 4.2 metrics; checks: settings checks (no torch).
"""

from sparsegen.models.stya2k.checks import problems
from sparsegen.papers import PaperPackage

# Networks the evaluation loads besides the model's own encoder: the StyTr2 content/style-loss
# VGG and LPIPS's AlexNet.
EVALUATION_NETWORKS = ("vgg19_normalised", "alexnet_torchvision")

PAPER = PaperPackage(
    name="stya2k",
    title="All-to-key Attention for Arbitrary Style Transfer",
    package=__name__,
    loss_columns=("loss", "global", "a2k", "adaa2k"),
    figures="sparsegen.figures.stya2k",
    problems=problems,
    training_networks=lambda s: [s["model"]["encoder"]],
    evaluation_networks=lambda s: list(EVALUATION_NETWORKS),
    bench_module="sparsegen.bench.stya2k",
)
