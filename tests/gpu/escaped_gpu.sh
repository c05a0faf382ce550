#!/usr/bin/env bash
# Issue 26 on a real GPU (docs/gpu.md "Escaped GPU processes"): a unit whose setsid'd child
# holds 2 GiB (torch) and ignores SIGTERM. ctl stop must leave no compute process of the unit
# and the memory back at the baseline (± 64 MiB); ctl restart must never put two generations
# on the GPU at once (NVML sampled every ~10 ms during it).
# Needs .wheels/ as run_gpu_checks.sh does.
set -uo pipefail
cd "$(dirname "$0")/../.."
DEPS=/tmp/vastinit-deps
python3 -c 'import sys, zipfile, glob; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in glob.glob(".wheels/*.whl") if "sglang-" not in w]' "$DEPS"
export PYTHONPATH="$PWD:$DEPS"
units=$(mktemp -d); sock=/tmp/vi-gpu.sock
cat > "$units/hog.toml" <<TOML
command = ["python3", "$PWD/tests/programs/gpu_escaper.py", "2048"]
[readiness]
log = "holding 2048 MiB"
start_timeout = "2m"
[stop]
timeout = "2s"
TOML
mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; }
apps() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader; }
ctl() { python3 -m vastinit ctl --socket "$sock" "$@"; }
echo "pid namespace inode: $(stat -L -c %i /proc/self/ns/pid) (initial: 4026531836)"
base=$(mem); echo "baseline: GPU 0 memory used $base MiB; compute apps: [$(apps)]"
python3 -m vastinit run --units "$units" --log-dir /tmp/vlogs --socket "$sock" > /tmp/vrun.log 2>&1 &
vpid=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
ctl ready --wait --timeout 120 hog
echo "--- running"; echo "GPU 0 memory used $(mem) MiB; compute apps:"; apps
ctl status hog
ctl status --json hog | python3 -c 'import json,sys; u=json.load(sys.stdin)["units"][0]; print("status json: pid", u["pid"], "escaped", u["escaped"], "gpu", u["gpu"])'
echo "--- ctl stop hog"
t0=$(date +%s.%N); ctl stop hog; t1=$(date +%s.%N)
after=$(mem)
echo "ctl stop took $(python3 -c "print(round($t1-$t0,2))") s; GPU 0 memory used $after MiB (baseline $base); compute apps: [$(apps)]"
python3 -c "d=abs($after-$base); print('memory back at baseline within 64 MiB:', d <= 64, f'(diff {d} MiB)')"
echo "--- ctl restart hog, NVML sampled every ~10 ms"
ctl start hog >/dev/null; ctl ready --wait --timeout 120 hog >/dev/null
python3 - "$sock" <<'PY' &
import os, time, pynvml
pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
seen, most, samples, t_end = set(), 0, 0, time.monotonic() + 60
while time.monotonic() < t_end and not os.path.exists("/tmp/restart-done"):
    pids = {p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)}
    seen |= pids; most = max(most, len(pids)); samples += 1
    time.sleep(0.01)
print(f"sampler: {samples} samples, compute processes seen: {sorted(seen)}, most at once: {most}")
PY
spid=$!
rm -f /tmp/restart-done; sleep 0.5
t0=$(date +%s.%N); ctl restart hog; ctl ready --wait --timeout 120 hog; t1=$(date +%s.%N)
echo 1 > /tmp/restart-done; wait $spid
echo "restart until ready: $(python3 -c "print(round($t1-$t0,2))") s"
kill -TERM $vpid; wait $vpid; echo "vastinit exited rc=$?"
echo "after shutdown: GPU 0 memory used $(mem) MiB; compute apps: [$(apps)]"
echo "--- vastinit log (GPU and stop lines)"
grep -E 'GPU memory|stopping|stopped|escaped|process tracking|holding' /tmp/vrun.log | cut -c1-220
