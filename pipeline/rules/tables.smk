# Paper-vs-reproduced tables, one rule per paper (its table list comes from its claims file).

for _paper in config["papers"]:

    rule:
        name:
            f"tabulate_{_paper}"
        input:
            claims=f"pipeline/claims/{_paper}.yaml",
            metrics=paper_metrics(_paper),
        output:
            L.tables(_paper),
        params:
            paper=_paper,
            runs_dir=L.paper_runs(_paper),
            out_dir=f"{L.results}/tables",
        log:
            f"{L.logs}/{_paper}/tabulate.log",
        benchmark:
            f"{L.benchmarks}/{_paper}/tabulate.jsonl"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        shell:
            "{PY} -m sparsegen tabulate --claims {input.claims} --runs-dir {params.runs_dir} "
            "--out-dir {params.out_dir} --preset {PRESET} > {log} 2>&1"
