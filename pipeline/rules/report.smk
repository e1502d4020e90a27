# results/index.html: links every table, figure, notebook and benchmark (offline).


rule report:
    input:
        all_tables(),
        all_notebooks(),
    output:
        L.report,
    log:
        f"{L.logs}/report.log",
    benchmark:
        f"{L.benchmarks}/report.jsonl"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "{PY} -m sparsegen report --results {L.results} --preset {PRESET} > {log} 2>&1"
