"""StyleNAT, "StyleNAT: Giving Each Head a New Perspective" (arXiv 2211.05770).

architecture: per-level widths, heads, kernels and dilations (Tables 5, 6) and settings checks;
layers: StyleGAN2/StyleSwin building blocks and the ImageNet normalisation of images;
generator: mapping + Hydra-NA (or StyleSwin) style transformer; discriminator: StyleSwin's
wavelet discriminator with spectral norm.

The networks are imported from their modules (`generator`, `discriminator`) so that config
validation can import `architecture` without torch.
"""
