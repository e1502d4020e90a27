# Paper-vs-reproduced tables, one rule per paper (its table list comes from its claims file).
# The comparability judge (sparsegen.judge) compares each record's facts with the claims'
# protocol here, at table time: a caption edit reruns the tables, never an evaluation.

for _paper in config["papers"]:

    rule:
        name:
            f"tabulate_{_paper}"
        input:
            **L.table_inputs(_paper),
        output:
            L.tables(_paper),
        params:
            runs_dir=metrics_root,
            out_dir=output_dir,
            preset=PRESET,
            code=code_of("tables"),
        log:
            f"{L.logs}/{_paper}/tabulate.log",
        benchmark:
            f"{L.benchmarks}/{_paper}/tabulate.jsonl"
        threads: 1
        conda:
            ENV
        resources:
            mem_mb=1000,
            runtime=5,
        shell:
            "python -m sparsegen tabulate --claims {input.claims} --runs-dir {params.runs_dir} "
            "--out-dir {params.out_dir} --preset {params.preset} > {log} 2>&1"
