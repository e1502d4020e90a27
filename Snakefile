# sparsegen: the DAG. `snakemake --cores all` reproduces every table and figure of the enabled
# papers under the preset named in params.yaml. Settings live in params.yaml only.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from sparsegen.config import ParamsError, validate_params

min_version("9.18")


configfile: "params.yaml"


try:
    validate_params(config, source="params.yaml (with --config overrides)")
except ParamsError as error:
    raise WorkflowError(str(error))

_dvc_preset = os.environ.get("SPARSEGEN_DVC_PRESET")
if _dvc_preset is not None and _dvc_preset != config["preset"]:
    raise WorkflowError(
        f"dvc.yaml was generated for preset {_dvc_preset!r} but params.yaml says "
        f"{config['preset']!r}: run `python -m sparsegen dvcgen` and then `dvc repro`."
    )


include: "pipeline/rules/common.smk"
include: "pipeline/rules/data.smk"
include: "pipeline/rules/train.smk"
include: "pipeline/rules/convert.smk"
include: "pipeline/rules/sample.smk"
include: "pipeline/rules/evaluate.smk"
include: "pipeline/rules/tables.smk"
include: "pipeline/rules/figures.smk"
include: "pipeline/rules/report.smk"
include: "pipeline/rules/bench.smk"


rule all:
    default_target: True
    input:
        L.report,
        all_tables(),
        all_notebooks(),
