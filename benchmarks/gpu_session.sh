#!/usr/bin/env bash
# What one lent GPU session runs (the device tool: a bare machine with torch, timm, OpenCV; 64 MiB carried
# per call), in two calls because the ELPV train cells and the wheels do not fit into one:
#   call 1, carrying .devpack/elpv (benchmarks/elpv_pack.py pack):           bash benchmarks/gpu_session.sh unpack
#   call 2, carrying .devpack/whl (efficientnet-lite0, faiss-cpu, and pydantic with its dependencies, which the
#   detector settings need: pydantic, pydantic-core, annotated-types, typing-inspection): bash benchmarks/gpu_session.sh run
#   call 3 (within 30 s of call 2, so /tmp/site and /tmp/elpv are still there), carrying .devpack/elpv-test
#   (`elpv_pack.py pack --split test --out .devpack/elpv-test`):                bash benchmarks/gpu_session.sh patchcore
# Call 2 trains the end-to-end supervised configurations (elpv_finetune.py train; the model files come back
# and are tested here with `elpv_finetune.py evaluate`). Call 3 fits PatchCore on 300 train goods (16,384-row
# bank), checks CPU-vs-GPU verdict agreement on the ELPV test split and measures throughput (gpu.py).
# Budget: about 1 + 6 + 4 minutes of the 15 device minutes; GPU_BENCH_SECONDS and BUDGET shorten the calls.
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src
out=${OUT:-runs/gpu}
mkdir -p "$out"

unpack() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, timm, numpy, cv2, sklearn; print('torch', torch.__version__, 'timm', timm.__version__, \
'numpy', numpy.__version__, 'cv2', cv2.__version__, 'sklearn', sklearn.__version__)"
    python3 benchmarks/elpv_pack.py unpack --pack .devpack/elpv --out ${DATA:-/tmp/elpv}
    python3 -c "import cellsight.detectors.supervised, cellsight.workflows.train, cellsight.modelfile; print('imports ok')"
}

case "${1:-}" in
unpack)
    unpack
    ;;
run)
    if [ ! -d ${DATA:-/tmp/elpv}/images ]; then unpack; fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .devpack/whl/*.whl
    export PYTHONPATH=src:/tmp/site
    full=${FULL:-'image_size=300,fine_tune="full"'}
    python3 benchmarks/elpv_finetune.py train --data-dir ${DATA:-/tmp/elpv} --out "$out" \
        --budget-seconds "${BUDGET:-300}" \
        --config "a:$full,max_epochs=30,patience=8" \
        --config "b:$full,max_epochs=30,patience=8,lr=0.0005,backbone_lr_factor=1.0" \
        --config "c:$full,max_epochs=40,patience=10,batch_size=64,lr=0.002,weight_decay=0.01,dropout=0.3" \
        --config "d:$full,max_epochs=30,patience=8,seed=1" 2>&1 | tee "$out/session.log" \
        || echo "training failed"
    ;;
patchcore)
    if [ ! -d /tmp/site ]; then
        echo "call 2 (run) must come first, within 30 s: it installs the wheels into /tmp/site" >&2
        exit 2
    fi
    export PYTHONPATH=src:/tmp/site
    python3 benchmarks/elpv_pack.py unpack --pack .devpack/elpv-test --out ${DATA:-/tmp/elpv}
    timeout "${GPU_BENCH_SECONDS:-240}" python3 benchmarks/gpu.py --data-dir ${DATA:-/tmp/elpv} --n-fit 300 2>&1 \
        | tee "$out/patchcore.log" || echo "gpu.py failed or ran out of time"
    cp BENCHMARKS.md "$out/" || true
    cp benchmarks/results/gpu.json "$out/" || true
    ;;
*)
    echo "usage: $0 unpack|run|patchcore" >&2
    exit 2
    ;;
esac
