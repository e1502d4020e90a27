"""A two-stage toy paper, added to a copy of the repository by tests/pipeline/test_paper_registry.py
exactly as the README's "Adding a paper" says: an auto-encoder (stage `encode`, not evaluated)
and a refiner trained on its frozen reconstructions (stage `refine`, which `uses` the first
stage's final.pt), scored by L1 against the images."""

from sparsegen.papers import PaperPackage, Stage

PAPER = PaperPackage(
    name="toy",
    title="A two-stage toy paper",
    package=__name__,
    stages=(Stage("encode", evaluated=False), Stage("refine")),
    loss_columns=("loss",),
    figures="sparsegen.figures.common",
    bench_module=None,
)
