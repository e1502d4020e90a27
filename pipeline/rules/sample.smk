# Evaluation samples of a trained variant (the paper's evaluation pairs or seeds).


rule sample:
    input:
        unpack(sample_inputs),
    output:
        directory(f"{RUN}/samples"),
    params:
        settings=evaluate_settings,
    log:
        f"{L.logs}/{{paper}}/{{experiment}}/{{variant}}/sample.log",
    benchmark:
        f"{L.benchmarks}/{{paper}}/{{experiment}}/{{variant}}/sample.jsonl"
    threads: 4 if PRESET == "paper" else 1
    conda:
        ENV
    resources:
        gpu=GPU,
        mem_mb=16000 if PRESET == "paper" else 2000,
        runtime=120 if PRESET == "paper" else 10,
    shell:
        "python -m sparsegen sample --settings {params.settings:q} --threads {threads} "
        "--checkpoint {input.checkpoint} --out {output} > {log} 2>&1"
