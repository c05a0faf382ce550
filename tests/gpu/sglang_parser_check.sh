#!/usr/bin/env bash
# The SGLang launch against SGLang's real parser on a GPU machine (docs/gpu.md, issue 23):
# `vastinit launch sglang` with a python3 whose `sglang` is the real package (0.5.8, the
# Containerfile's base, and the newest) and whose server is tests/gpu/print_server_args.py
# (the real parser, a stub run_server). The tp size comes from NVML.
# Needs in .wheels/: the sglang wheels (pip download --no-deps), msgspec (cp312), and the
# pure-Python wheels of structlog, tomli-w, croniter, python-dateutil, pytz, six, tzdata,
# plus PyYAML (cp312).
set -uo pipefail
cd "$(dirname "$0")/../.."
DEPS=/tmp/vastinit-deps
python3 -c 'import sys, zipfile, glob; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in glob.glob(".wheels/*.whl") if "sglang-" not in w]' "$DEPS"
step() { echo; echo "\$ $*"; "$@" 2>&1; }
launch() { echo; echo "\$ SGLANG_ARGS='${SGLANG_ARGS:-}' vastinit launch sglang"; python3 -m vastinit launch sglang 2>&1; echo "(exit $?)"; }
step nvidia-smi -L
for whl in .wheels/sglang-*.whl; do
    version=$(basename "$whl" | cut -d- -f2)
    SGL=/tmp/sgl-$version
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$SGL"
    export PYTHONPATH="$PWD:$DEPS:$SGL"
    echo; echo "=== SGLang $version (the real package; $(python3 -c 'import importlib.metadata as m; print(m.version("sglang"))'))"
    export SGLANG_MODEL=Qwen/Qwen2.5-0.5B-Instruct WORKSPACE=/tmp/ws
    export SGLANG_SERVER_CMD="python3 $PWD/tests/gpu/print_server_args.py"
    launch
    SGLANG_ARGS="--tens 1 --ho localhost --log-level warning" launch
    printf 'tp-size: 1\nport: 18000\n' > /tmp/c.yaml
    SGLANG_ARGS="--config=/tmp/c.yaml" launch
    SGLANG_ARGS="--pp 2" launch
    SGLANG_ARGS="--port 9000" launch
    # The fixture again, torch real this time (only what is missing stubbed): same flags?
    rm -f /tmp/f-$version.json
    python3 tools/sglang_flags.py --stub-missing --output /tmp/f-$version.json 2>&1 | tail -3
    [ -s /tmp/f-$version.json ] || { echo "(no torch-real fixture for $version)"; continue; }
    step python3 -c 'import json, sys
a, b = (json.load(open(p))["actions"] for p in sys.argv[1:])
print("fixture vs torch-real parse:", "same actions" if a == b else f"DIFFER: {len(a)} vs {len(b)}")
if a != b:
    for x, y in zip(a, b):
        if x != y: print(" committed:", x); print(" torch-real:", y)' "vastinit/stack/sglang_flags/$version.json" /tmp/f-$version.json
done
