# Paper-table metrics of a variant's samples: one JSON record per metric.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        f"{RUN}/metrics.json",
    params:
        settings=evaluate_settings,
    log:
        f"{L.logs}/{{paper}}/{{experiment}}/{{variant}}/evaluate.log",
    benchmark:
        f"{L.benchmarks}/{{paper}}/{{experiment}}/{{variant}}/evaluate.jsonl"
    threads: 4 if PRESET == "paper" else 1
    conda:
        ENV
    resources:
        gpu=GPU,
        mem_mb=16000 if PRESET == "paper" else 2000,
        runtime=120 if PRESET == "paper" else 10,
    shell:
        "python -m sparsegen evaluate --settings {params.settings:q} --threads {threads} "
        "--samples {input.samples} --out {output} > {log} 2>&1"
