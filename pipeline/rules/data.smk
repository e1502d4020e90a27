# Datasets (fetch, verify, prepare) and pretrained weights (fetch, verify).


rule fetch_dataset:
    """Download and verify one upstream source (shared by the datasets made from it); a source
    that prepares from another's download fetches after it."""
    input:
        fetch_inputs,
    output:
        L.source_receipt("{source}"),
    params:
        raw_dir=source_raw_dir,
    log:
        f"logs/fetch/{{source}}.log",
    benchmark:
        f"benchmarks/fetch/{{source}}.jsonl"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=24 * 60,
    shell:
        "python -m sparsegen fetch dataset --source {wildcards.source} "
        "--raw-dir {params.raw_dir} --receipt {output} "
        "> {log} 2>&1"


rule prepare_dataset:
    input:
        prepare_inputs,
    output:
        directory(L.prepared("{dataset}")),
    params:
        settings=dataset_settings,
        raw_dir=raw_dir,
    log:
        f"logs/prepare/{{dataset}}.log",
    benchmark:
        f"benchmarks/prepare/{{dataset}}.jsonl"
    threads: 8 if PRESET == "paper" else 1
    conda:
        ENV
    resources:
        mem_mb=8000 if PRESET == "paper" else 1000,
        runtime=12 * 60 if PRESET == "paper" else 10,
    shell:
        "python -m sparsegen prepare --name {wildcards.dataset} --settings {params.settings:q} "
        "--raw-dir {params.raw_dir} --out {output} --threads {threads} > {log} 2>&1"


rule fetch_weights:
    output:
        L.weights_file("{weightfile}"),
    params:
        name=weight_name,
        dest=output_dir,
    log:
        f"logs/fetch/weights-{{weightfile}}.log",
    benchmark:
        f"benchmarks/fetch/weights-{{weightfile}}.jsonl"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=60,
    shell:
        "python -m sparsegen fetch weights --name {params.name} --dest {params.dest} > {log} 2>&1"


rule weights:
    """Fetch and verify every pretrained network in the weights manifest."""
    input:
        [L.weights_file(f) for f in WEIGHT_FILES],
