"""StyleNAT, "StyleNAT: Giving Each Head a New Perspective" (arXiv 2211.05770).

architecture: per-level widths, heads, kernels and dilations (Tables 5, 6) and settings checks;
layers: StyleGAN2/StyleSwin building blocks and the ImageNet normalisation of images;
generator: mapping + Hydra-NA (or StyleSwin) style transformer; discriminator: StyleSwin's
wavelet discriminator with spectral norm; task, sampling, evaluation: the pipeline's jobs.

The networks are imported from their modules (`generator`, `discriminator`) so that config
validation can import this package and `architecture` without torch.
"""

from sparsegen.models.stylenat import architecture
from sparsegen.papers import PaperPackage

# FID50k (pytorch-fid's Inception, the paper's protocol) and clean-fid's, beside it.
EVALUATION_NETWORKS = ("inception_fid_pytorch", "inception_fid_torchscript")

PAPER = PaperPackage(
    name="stylenat",
    title="StyleNAT: Giving Each Head a New Perspective",
    package=__name__,
    loss_columns=("g", "d", "r1", "bcr_real", "bcr_fake"),
    figures="sparsegen.figures.stylenat",
    problems=lambda s: architecture.problems(s["model"]),
    evaluation_networks=lambda s: list(EVALUATION_NETWORKS),
    bench_module="sparsegen.bench.stylenat",
)
