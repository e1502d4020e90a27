# Figures: each paper's notebook executed by papermill, exported to offline HTML.


rule figures:
    input:
        unpack(figure_inputs),
    output:
        ipynb=L.notebook("{paper}", "ipynb"),
        html=L.notebook("{paper}", "html"),
        figures=directory(L.figures("{paper}")),
    params:
        runs_dir=paper_runs_dir,
        code=code_of("figures"),
    log:
        f"{L.logs}/{{paper}}/figures.log",
    benchmark:
        f"{L.benchmarks}/{{paper}}/figures.jsonl"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m sparsegen figures --notebook {input.notebook} --out-ipynb {output.ipynb} "
        "--out-html {output.html} --param runs_dir={params.runs_dir} "
        "--param figures_dir={output.figures} --param claims={input.claims} > {log} 2>&1"
