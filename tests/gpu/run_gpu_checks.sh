#!/usr/bin/env bash
# GPU checks for docs/gpu.md, run on a machine with NVIDIA GPUs through the device tool:
#   NVML count, CUDA_VISIBLE_DEVICES handling, the argv `vastinit launch sglang` builds,
#   and GPU memory released when vastinit stops a unit whose group holds it.
# Needs the pure-Python wheels of structlog, tomli-w, croniter (+ deps) in .wheels/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
DEPS=/tmp/vastinit-deps
# Pure-Python wheels are zip files: unpacking them is an install that needs no pip or index.
python3 -c 'import sys, zipfile, glob; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in glob.glob(".wheels/*.whl") if "sglang-" not in w]' "$DEPS"
export PYTHONPATH="$PWD:$DEPS"
step() { echo; echo "\$ $*"; "$@" 2>&1; }

step nvidia-smi -L
step python3 -c 'from vastinit.stack.gpu import gpu_count; print("gpu_count() =", gpu_count())'
for cvd in 0 "0,1" "" "1,0,7" "GPU-not-a-real-uuid"; do
    echo; echo "\$ CUDA_VISIBLE_DEVICES='$cvd' gpu_count()"
    CUDA_VISIBLE_DEVICES="$cvd" python3 -c 'from vastinit.stack.gpu import gpu_count; print(gpu_count())'
done
uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1)
echo; echo "\$ CUDA_VISIBLE_DEVICES=<uuid of GPU 0> gpu_count()"
CUDA_VISIBLE_DEVICES="$uuid" python3 -c 'from vastinit.stack.gpu import gpu_count; print(gpu_count())'

# The argv: the server command is replaced by `echo` so nothing needs SGLang installed.
export SGLANG_MODEL=Qwen/Qwen2.5-0.5B-Instruct WORKSPACE=/tmp/ws SGLANG_SERVER_CMD="echo sglang serve"
step python3 -m vastinit launch sglang
CUDA_VISIBLE_DEVICES=0 step python3 -m vastinit launch sglang
SGLANG_ARGS="--tp 2 --mem-fraction-static 0.8" step python3 -m vastinit launch sglang
AUTO_PARALLEL=false step python3 -m vastinit launch sglang

# GPU memory released after a stop: a unit whose main process and child each hold 2 GiB
# and ignore SIGTERM; vastinit stops it (SIGKILL after 2 s) and NVML must show it freed.
units=$(mktemp -d)
cat > "$units/hog.toml" <<TOML
command = ["python3", "$PWD/tests/programs/gpu_hog.py", "2048", "--ignore-term"]
[stop]
timeout = "2s"
TOML
mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; }
procs() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader; }
echo; echo "GPU 0 memory used before: $(mem) MiB"
python3 -m vastinit run --units "$units" --log-dir /tmp/vlogs --no-control > /tmp/vrun.log 2>&1 &
vpid=$!
for _ in $(seq 1 300); do [ "$(grep -c 'holding 2048 MiB' /tmp/vrun.log)" -ge 2 ] && break; sleep 0.1; done
echo "while running: GPU 0 memory used $(mem) MiB; compute apps:"; procs
start=$(date +%s.%N); kill -TERM $vpid; wait $vpid; rc=$?; end=$(date +%s.%N)
echo "vastinit exited rc=$rc after $(python3 -c "print(round($end-$start,2))") s"
echo "after stop: GPU 0 memory used $(mem) MiB; compute apps: [$(procs)]"
echo "--- vastinit output ---"; cat /tmp/vrun.log
