#!/usr/bin/env bash
# The GPU figures the open issues ask for, as one short run on a GPU machine.
#
# Made for the project's lent GPU machine (its image has torch, transformers and tokenizers, a
# CPU-only onnxruntime, and neither FastAPI nor pydantic, which app.batching imports), but any
# host with a CUDA torch works. Two steps:
#
#   bash benchmarks/gpu_checks.sh --prepare   # here, online: wheels the image lacks and the
#                                             # data files, into .device/ (git-ignored)
#   bash benchmarks/gpu_checks.sh             # there, with .device carried: results in $OUT
#                                             # (or runs/gpu-checks)
#   GPU_CHECKS_ARGS="--device cpu --quick" bash benchmarks/gpu_checks.sh   # a check that it runs
#
# What it runs (about 4 minutes on an H200):
#   - benchmarks/cuda_reference.py: BERT-base classification, SST-2 dev sentences one per
#     request, our batcher with torch fp16 vs batch 1 vs a transformers pipeline per request
#     (issue 5's CUDA table; onnxruntime-gpu itself is measured by serve_load.py --provider
#     cuda where it is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=.device
# The serve extra's pins (constraints.txt) of what app.batching needs beyond the GPU image.
WHEELS=(fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic_core==2.50.5
        pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0
        typing-inspection==0.4.5 typing_extensions==4.16.0 opentelemetry-api==1.45.2)

if [[ "${1:-}" == "--prepare" ]]; then
    : "${BERT_DATA_DIR:?set BERT_DATA_DIR to the shared data folder}"
    mkdir -p "$DEV/whl" "$DEV/data"
    grep -qxF "/$DEV/" .git/info/exclude 2>/dev/null || echo "/$DEV/" >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$DEV/whl" "${WHEELS[@]}"
    cp "$BERT_DATA_DIR/sst2/dev.tsv" "$DEV/data/sst2-dev.tsv"
    cp "$BERT_DATA_DIR/bert_vocab/bert-base-uncased/vocab.txt" "$DEV/data/vocab.txt"
    du -sh "$DEV"
    exit 0
fi

OUT=${OUT:-runs/gpu-checks}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! "$PY" -c "import fastapi, pydantic_settings" 2>/dev/null; then
    [[ -d "$DEV/whl" ]] || { echo "no FastAPI/pydantic here: run --prepare and carry $DEV" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu-checks-site "$DEV"/whl/*.whl
    export PYTHONPATH=/tmp/gpu-checks-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" || true
"$PY" benchmarks/cuda_reference.py --out "$OUT" --seconds 8 --concurrency 1,8,32,128 \
    --sentences "$DEV/data/sst2-dev.tsv" --vocab "$DEV/data/vocab.txt" ${GPU_CHECKS_ARGS:-} 2>&1 |
    tee "$OUT/cuda_reference.log"
