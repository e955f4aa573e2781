#!/bin/bash
# Searches through a real local Ray on a lent GPU machine, which has no Ray of its own: CPU workers
# (the default) beside the GPU, two workers sharing it (--gpus-per-worker 0.5), and one worker with
# 4 settings as one vmapped program; then each shared worker's device and JAX memory limit.
#
# The machine takes at most 64 MiB per call and Ray's wheel is 79 MB, so first, here (with
# network), make a folder the call carries, git-ignored: Ray without its jars, RLlib, data, serve
# and the dashboard's client as a tar.xz (21 MB), and the wheels Ray and cellsearch need that the
# machine's image lacks (jsonschema and its own, orjson):
#
#     bash benchmarks/gpu_search_check.sh --prepare .dev    # about 2 minutes (xz)
#     echo /.dev/ >> .git/info/exclude
#
# then on the machine (carry .dev), about 1.5 minutes on an H200 (session 39):
#
#     bash benchmarks/gpu_search_check.sh .dev OUT_DIR
set -u
if [ "${1:-}" = --prepare ]; then
  dir=${2:?usage: bash benchmarks/gpu_search_check.sh --prepare DIR}
  mkdir -p "$dir/whl" && work=$(mktemp -d) || exit 1
  platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
  get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp $platforms -d "$1" "${@:2}"; }
  get "$work" ray==2.60.0 && get "$dir/whl" jsonschema jsonschema-specifications referencing \
    rpds-py orjson==3.13.0 || exit 1
  (cd "$work" && unzip -q ray-*.whl && tar --exclude=ray/jars --exclude=ray/rllib \
     --exclude=ray/data --exclude=ray/serve --exclude=ray/llm --exclude=ray/dashboard/client \
     -cf - ray ray-*.dist-info) | xz -9 -T0 > "$dir/ray-slim.tar.xz"
  rm -rf "$work"
  ls -l "$dir" "$dir/whl"
  exit
fi
carry=${1:?usage: bash benchmarks/gpu_search_check.sh CARRY_DIR OUT_DIR}
out=${2:?usage: bash benchmarks/gpu_search_check.sh CARRY_DIR OUT_DIR}
mkdir -p "$out"
site=/tmp/site
export PYTHONUNBUFFERED=1 PYTHONPATH=$site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=$site/bin:$PATH
mkdir -p $site && tar -xJf "$carry/ray-slim.tar.xz" -C $site && python3 -m pip install -q \
  --no-index --no-deps --no-compile --no-cache-dir --target $site "$carry"/whl/*.whl || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mapfile -t tiny < <(PYTHONPATH=$PWD/tests:$PYTHONPATH python3 -c \
  "from searchkit import tiny_args; print('\n'.join(tiny_args(max_trials=8)))")
runs=$(mktemp -d)
search() {  # name, then cellsearch search's own arguments
  local name=$1 start=$SECONDS; shift
  echo "== cellsearch search quick $* (tests' tiny budget, 8 trials)"
  timeout 150 python3 -m search.cli search quick --out "$runs/$name" "${tiny[@]}" --quiet "$@" \
    2>&1 | tail -4
  echo "exit ${PIPESTATUS[0]}, $((SECONDS - start)) s"
  python3 - "$runs/$name" <<'EOF'
import collections, sys
from results import load
rows = load(sys.argv[1])
if rows.empty:
    sys.exit("no rows")
vmapped = rows.get("vmapped_settings", 1)  # (a column only where some trials were vmapped)
rows = rows.assign(vmapped=1 if isinstance(vmapped, int) else vmapped.fillna(1).astype(int))
print(len(rows), "rows by status, device and vmapped settings:",
      dict(collections.Counter(zip(rows["status"], rows["device"], rows["vmapped"]))))
for error in rows.loc[rows["status"] == "error", "error"].head(2):
    print("  error:", str(error)[:300])
EOF
}
search cpu-workers --workers 4 | tee "$out/cpu_workers.log"
search half-gpu --gpus-per-worker 0.5 | tee "$out/half_gpu.log"
# a group is the pending trials of one program shape (cell, task, budget, layers): the baselines
# strategy at 4 settings per task and one layer count gives every group its 4
search vmapped --gpus-per-worker 1 --set vmap_settings=4 --set strategy=baselines \
  --set settings_per_task=4 --set 'grid.layers=[1]' | tee "$out/vmapped.log"
echo "== two workers sharing the GPU: device, JAX's memory limit, XLA_CLIENT_MEM_FRACTION"
timeout 90 python3 - <<'EOF' 2>&1 | tail -3 | tee "$out/shared_memory.log"
import os
import ray  # imported first, as a notebook would: the executor still starts its own local Ray
from search.executor import RayExecutor, TrialWorker

class Memory(TrialWorker):
    def memory(self):
        import jax
        device = jax.devices()[0]
        limit = device.memory_stats()["bytes_limit"] / 2**30
        return device.device_kind, f"{limit:.1f} GiB", os.environ.get("XLA_CLIENT_MEM_FRACTION")

with RayExecutor(gpus_per_worker=0.5, worker=Memory) as executor:
    print(ray.get([actor.memory.remote() for actor in executor.actors]))
EOF
