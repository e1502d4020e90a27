# GPU efficiency benchmarks (not part of `all`: run `snakemake --cores all bench_all` on a GPU
# machine; the CSVs are committed with the GPU's name).


rule bench:
    output:
        L.bench("{paper}"),
    log:
        f"logs/bench/{{paper}}.log",
    benchmark:
        f"benchmarks/bench/{{paper}}.jsonl"
    threads: 4
    conda:
        ENV
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    shell:
        "python -m sparsegen bench {wildcards.paper} --out {output} > {log} 2>&1"


rule bench_all:
    input:
        [L.bench(p) for p in config["papers"]],
