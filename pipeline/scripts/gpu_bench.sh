#!/usr/bin/env bash
# Run a GPU benchmark, or the GPU tests, on a machine that has a copy of this repository without
# .git and only its image's packages (python3 3.12 with torch, triton, numpy, pandas, scipy,
# scikit-image, pyyaml, tqdm, matplotlib, pillow, pytest).
#
#   SPARSEGEN_GIT_COMMIT=<full commit of the copy> bash pipeline/scripts/gpu_bench.sh WHAT [OUT]
#
# WHAT: stya2k | stylenat (python -m sparsegen bench WHAT, CSV and log into OUT) | dynast
# (python -m sparsegen.bench.dynast, arguments after OUT go to it, e.g. --parts variants; the
# CSV is $DYNAST_CSV.csv, default dynast) | ilat (python -m sparsegen.bench.ilat, arguments
# after OUT go to it, e.g. --datasets pa --precisions tf32, or --estimate-only; the CSV is
# $ILAT_CSV.csv, default ilat) | ilat_training (python -m sparsegen.bench.ilat_training:
# seconds per iteration of each stage, ilat_training.csv) | released (the
# authors'-weights variants' convert/sample/evaluate cost, python -m sparsegen.bench.released;
# arguments after OUT go to it, e.g. --variants released_ffhq1024) | tests (pytest -m gpu on
# tests/gpu and tests/models/test_stylenat_evaluation.py). OUT defaults to
# results/bench. Wheels of what the image lacks travel in .whl/ (git-ignored; fetch them with
# `bash pipeline/scripts/gpu_bench.sh wheels` where pip reaches PyPI). natten is not among them:
# PyPI has only its source distribution; a wheel built from it here (`pip wheel natten==0.21.7`,
# no compiled kernels) may be put in .whl/ too, else the NATTEN rows are recorded as skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."

what=${1:?"usage: SPARSEGEN_GIT_COMMIT=<commit> $0 stya2k|stylenat|dynast|ilat|released|tests|wheels [OUT]"}
out=${2:-results/bench}
extra=("${@:3}")

# Versions as in constraints.txt; the image has attrs and typing-extensions, which they need.
# clean-fid and lpips (pure Python) score the released variants' samples.
WHEELS=(jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
        rpds-py==2026.9.1 clean-fid==0.1.35 lpips==0.1.4)

if [[ $what == wheels ]]; then
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
             manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d .whl "${WHEELS[@]}"
    exit 0
fi

# The CSVs record the commit that made them; a copy without .git cannot find it itself.
: "${SPARSEGEN_GIT_COMMIT:?set SPARSEGEN_GIT_COMMIT to the full commit of this copy (git rev-parse HEAD where it came from)}"
export SPARSEGEN_GIT_COMMIT
# NVLink multicast stays off (the GPU machines require it; the DDP ranks inherit this).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src

python3 - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}, {torch.cuda.device_count()} GPU(s): "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}", flush=True)
PY

mkdir -p "$out"
case $what in
    stya2k|stylenat)
        start=$SECONDS
        python3 -m sparsegen bench "$what" --out "$out/$what.csv" 2>&1 | tee "$out/$what.log"
        echo "bench $what: $((SECONDS - start)) s" | tee -a "$out/$what.log"
        ;;
    released)
        start=$SECONDS
        name=${RELEASED_CSV:-released}
        python3 -m sparsegen.bench.released --out "$out/$name.csv" "${extra[@]}" 2>&1 \
            | tee "$out/$name.log"
        echo "bench released: $((SECONDS - start)) s" | tee -a "$out/$name.log"
        ;;
    dynast)
        start=$SECONDS
        name=${DYNAST_CSV:-dynast}
        python3 -m sparsegen.bench.dynast --out "$out/$name.csv" "${extra[@]}" 2>&1 \
            | tee "$out/$name.log"
        echo "bench dynast: $((SECONDS - start)) s" | tee -a "$out/$name.log"
        ;;
    ilat)
        start=$SECONDS
        name=${ILAT_CSV:-ilat}
        python3 -m sparsegen.bench.ilat --out "$out/$name.csv" "${extra[@]}" 2>&1 \
            | tee "$out/$name.log"
        echo "bench ilat: $((SECONDS - start)) s" | tee -a "$out/$name.log"
        ;;
    ilat_training)
        start=$SECONDS
        python3 -m sparsegen.bench.ilat_training --out "$out/ilat_training.csv" "${extra[@]}" \
            2>&1 | tee "$out/ilat_training.log"
        echo "bench ilat_training: $((SECONDS - start)) s" | tee -a "$out/ilat_training.log"
        ;;
    tests)
        python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu \
            tests/models/test_stylenat_evaluation.py 2>&1 | tee "$out/gpu_tests.log"
        ;;
    *)
        echo "unknown WHAT: $what (stya2k | stylenat | dynast | ilat | ilat_training | released | tests | wheels)" >&2
        exit 2
        ;;
esac
