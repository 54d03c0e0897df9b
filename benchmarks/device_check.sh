#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one command for a GPU machine that has PyTorch but perhaps
# not this project's environment: the CUDA-versus-CPU tests (tests/test_cuda.py), the product
# kernels against a float64 product (tests/test_product.py) and the op-level record of a step's
# U-sized traffic (tests/test_step_traffic.py), then the training benchmark at the ML-20M and MSD
# shapes: the floors, the current code, the straightforward reference, and both product kernels on
# the GPU; not the "previous" code (--no-previous), the CPU's before its product kernel: on a GPU its
# step is the current one and only its validation pass differs. Everything is also written to
# OUTPUT_DIR (default benchmarks/output), for benchmarks/README.md.
#
#   bash benchmarks/device_check.sh [OUTPUT_DIR]
#
# Needs python3 with torch, numpy, scipy, pandas, pyarrow, tqdm, pytest, pyyaml (the tests' conftest
# reads configs) and recsys-metrics.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/output}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv" || status=1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/gpu.csv"
python3 -m pytest tests/test_cuda.py tests/test_product.py tests/test_step_traffic.py -q -p no:cacheprovider 2>&1 | tee "$out/test_cuda.log" || status=1
for shape in ml-20m msd; do
    python3 benchmarks/train_benchmark.py --shape "$shape" --device cuda --repeats 20 --reference-repeats 5 --no-previous \
        --json "$out/train_$shape.json" 2>&1 | tee "$out/train_$shape.log" || status=1
done
exit $status
