"""iLAT, "The Image Local Autoregressive Transformer" (NeurIPS 2021).

Two stages: tokenizers (plain and two-stream VQGANs, Eq. 1-4) and local-autoregressive
transformers on their tokens (Eq. 5-7). two_stream, quantize, tokenizer, taming: the tokenizers;
transformer, generate: the GPT and its (cached) sampler; checks: settings checks (no torch);
data, task, sampling, evaluation: the jobs.
"""

from sparsegen.models.ilat import checks
from sparsegen.papers import PaperPackage, Stage

PAPER = PaperPackage(
    name="ilat",
    title="The Image Local Autoregressive Transformer",
    package=__name__,
    stages=(Stage("tokenizer"), Stage("transformer")),
    loss_columns=("rec", "codebook", "g", "d", "ce"),
    figures="sparsegen.figures.ilat",
    problems=checks.problems,
    training_networks=checks.training_networks,
    evaluation_networks=checks.evaluation_networks,
    bench_module="sparsegen.bench.ilat",
)
