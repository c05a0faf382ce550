"""A stand-in SGLang server for the GPU check: SGLang's real parser, a stub ``run_server``.

    python3 tests/gpu/print_server_args.py ARGS...

Reads ARGS exactly as ``python3 -m sglang.launch_server`` does (``prepare_server_args``:
the real ``ServerArgs.add_cli_args``, the real ``--config`` merger), then, instead of
starting a server, prints what it parsed. torch is the machine's real one; packages that
are not installed (the GPU box has torch but not SGLang's other dependencies) are stubbed by
tools/sglang_flags.py's finder, placed last so nothing installed is replaced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import sglang_flags

# First try: only what is missing is stubbed (torch real). If SGLang's import trips over
# a mix of real and stubbed packages, run again with every non-stdlib package stubbed.
FULL_STUB = os.environ.get("PRINT_SERVER_ARGS_FULL_STUB") == "1"
sglang_flags.install_stub(missing_only=not FULL_STUB)
try:
    from sglang.srt import server_args as sa  # type: ignore[import-not-found]
    from sglang.version import __version__  # type: ignore[import-not-found]
except Exception as exc:
    if FULL_STUB:
        raise
    print(f"(import with the real installed packages failed: {exc!r}; every one stubbed now)")
    sys.stdout.flush()
    env = {**os.environ, "PRINT_SERVER_ARGS_FULL_STUB": "1"}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str]) -> int:
    parser = sa.argparse.ArgumentParser()
    sa.ServerArgs.add_cli_args(parser)
    if "--config" in argv:
        try:
            from sglang.srt.server_args_config_parser import ConfigArgumentMerger
        except ImportError:
            from sglang.srt.utils.server_args_config_parser import ConfigArgumentMerger
        argv = ConfigArgumentMerger(parser).merge_config_with_args(argv)
    raw = vars(parser.parse_args(argv))
    shown = {
        k: raw.get(k)
        for k in ("model_path", "tp_size", "tensor_parallel_size", "host", "port", "log_level")
        if k in raw
    }
    mode = "all stubbed" if FULL_STUB else "torch real, missing packages stubbed"
    print(f"run_server (stub) of SGLang {__version__} ({mode}): parsed {json.dumps(shown)}")
    probe = (
        "import torch; "
        "print(f'torch {torch.__version__}: {torch.cuda.device_count()} CUDA device(s)')"
    )
    subprocess.run([sys.executable, "-c", probe], check=False, env={"PATH": os.environ["PATH"]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
