# Training: one job per (paper, experiment, variant); resumes from RUN/ckpt/last.pt.


rule train:
    input:
        unpack(train_inputs),
    output:
        final=f"{RUN}/final.pt",
        loss_log=f"{RUN}/train_log.csv",
    params:
        settings=train_settings,
        run_dir=RUN,
    log:
        f"{L.logs}/{{paper}}/{{experiment}}/{{variant}}/train.log",
    benchmark:
        f"{L.benchmarks}/{{paper}}/{{experiment}}/{{variant}}/train.jsonl"
    threads: 4 if PRESET == "paper" else 1
    conda:
        ENV
    resources:
        gpu=GPU,
        mem_mb=32000 if PRESET == "paper" else 2000,
        runtime=48 * 60 if PRESET == "paper" else 15,
    shell:
        "python -m sparsegen train --settings {params.settings:q} --threads {threads} "
        "--run-dir {params.run_dir} --final {output.final} --log {output.loss_log} > {log} 2>&1"
