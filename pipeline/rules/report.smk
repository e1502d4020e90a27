# results/index.html: links every table, figure, notebook and benchmark (offline).


rule report:
    input:
        all_tables(),
        all_notebooks(),
    output:
        L.report,
    params:
        results=output_dir,
        preset=PRESET,
        code=L.code_fingerprint(None, "report"),
    log:
        f"{L.logs}/report.log",
    benchmark:
        f"{L.benchmarks}/report.jsonl"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m sparsegen report --results {params.results} --preset {params.preset} > {log} 2>&1"
