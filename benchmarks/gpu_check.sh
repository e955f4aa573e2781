#!/bin/bash
# What to run on a lent GPU machine, in the repository root: the vmapped-settings benchmark on PTB
# and arith (K = 20, paper preset), the loops' two layouts side by side (loop_layout.py), and the
# tests that check the cells, the readout, the hand-written backward pass (in both of its loops'
# layouts), the loss, the clip and the vmapped trainer, at float32 matmul precision (a GPU's
# default TF32 matmuls would miss the tests' tolerances), and the executable store's tests
# (programs loaded untraced must equal compiled ones bit for bit, so with XLA's deterministic GPU
# kernels: its default atomics add in a different order each run). The tests run with JAX's
# preallocation off: several JAX processes share the GPU there (pytest's two workers and the
# processes the store's tests start), and each would take 75% of its memory. Needs jax with CUDA,
# flax, optax, pandas, pyarrow, pytest, pytest-timeout and hypothesis; not Ray. Writes its tables
# and the test logs to OUT_DIR.
#
#     bash benchmarks/gpu_check.sh OUT_DIR        # about 4 minutes on an H200 (session 39), and
#                                                 # loop_layout.py's minute since session 40
set -u
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
timeout 130 python3 benchmarks/vmap_settings.py --task ptb --rounds 2 --out "$out/vmap_ptb_h200" 2>&1 | tail -12
XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_DEFAULT_MATMUL_PRECISION=highest timeout 200 python3 -m pytest -q -p no:cacheprovider --timeout 120 \
  tests/test_compiler.py tests/test_trainer.py \
  -k "backward_pass or layout or flax or softmax_cross_entropy or clip_by_global_norm or vmapped or evaluation_statistics or precomputed or loss_decreases or readout" \
  2>&1 | tee "$out/gpu_tests.log" | tail -25
XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_FLAGS=--xla_gpu_deterministic_ops=true timeout 200 python3 -m pytest -q -p no:cacheprovider --timeout 120 \
  tests/test_executables.py 2>&1 | tee "$out/gpu_store_tests.log" | tail -25
timeout 110 python3 benchmarks/vmap_settings.py --k 20 --steps 200 --rounds 2 --out "$out/vmap_arith_h128" 2>&1 | tail -12
# the loops' two layouts, which the package picks between on CPUs only (cells.scan)
timeout 90 python3 benchmarks/loop_layout.py --rounds 6 --out "$out/loop_layout_h200" 2>&1 | tail -10
