# Training: one job per (paper, experiment, variant); resumes from RUN/ckpt/last.pt when the
# checkpoint was made from the same settings, data and weights (and says why not, otherwise).
# A job stops cleanly, checkpointed, `jobs.stop_margin_min` before its allocation
# (`resources.runtime`) ends and exits with status 75; Snakemake's retries (`jobs.train_attempts`
# under the paper preset) start the next attempt, which resumes: one training spans many
# allocations.

TRAIN_RUNTIME = config["jobs"]["train_runtime_min"] if PRESET == "paper" else 60
STOP_MARGIN = config["jobs"]["stop_margin_min"] if PRESET == "paper" else 0


rule train:
    input:
        unpack(train_inputs),
    output:
        final=f"{RUN}/final.pt",
        loss_log=f"{RUN}/train_log.csv",
        kept=directory(f"{RUN}/kept"),
    params:
        settings=train_settings,
        run_dir=RUN,
        stop_margin=STOP_MARGIN,
    log:
        f"{L.logs}/{{paper}}/{{experiment}}/{{variant}}/train.log",
    benchmark:
        f"{L.benchmarks}/{{paper}}/{{experiment}}/{{variant}}/train.jsonl"
    retries: config["jobs"]["train_attempts"] - 1 if PRESET == "paper" else 0
    threads: 4 if PRESET == "paper" else 1
    conda:
        ENV
    resources:
        gpu=GPU,
        mem_mb=32000 if PRESET == "paper" else 2000,
        runtime=TRAIN_RUNTIME,
    shell:
        "python -m sparsegen train --settings {params.settings:q} --threads {threads} "
        "--run-dir {params.run_dir} --final {output.final} --train-log {output.loss_log} "
        "--kept {output.kept} --time-limit-min {resources.runtime} "
        "--stop-margin-min {params.stop_margin} >> {log} 2>&1"
