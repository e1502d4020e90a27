# A released variant's checkpoint: the authors' weights mapped onto our network (the paper's
# `released` module, checked one-to-one). Stands in for `train`: no training job; the sample
# and evaluate rules read RUN/converted.pt as they read a trained RUN/final.pt. Under the smoke
# preset (or without the fetched file under `weights: auto`) it converts a seeded stand-in in the
# official layout, and every record says so.


rule convert:
    input:
        unpack(convert_inputs),
    output:
        f"{RUN}/converted.pt",
    params:
        settings=convert_settings,
    log:
        f"{L.logs}/{{paper}}/{{experiment}}/{{variant}}/convert.log",
    benchmark:
        f"{L.benchmarks}/{{paper}}/{{experiment}}/{{variant}}/convert.jsonl"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=16000 if PRESET == "paper" else 2000,
        runtime=30 if PRESET == "paper" else 10,
    shell:
        "python -m sparsegen convert --settings {params.settings:q} --threads {threads} "
        "--out {output} > {log} 2>&1"
