"""A stand-in for the SGLang server that behaves like it where vastinit can see (tests only).

    fake_sglang.py --model-path M [--host H] [--port P] [--api-key K] [--served-model-name N]
                   [--fake-load-seconds S] [--fake-warmup-seconds S] [--fake-token-delay S]
                   [--fake-detached-scheduler] [--log-level L] [--node-rank R]
                   [any other SGLang flag: accepted and ignored]

The timeline and signals follow /work/shared/reference/sglang-ops.md §2-3 (SGLang 0.5.23):

- A "scheduler" child starts first, in the server's process group, with
  PR_SET_PDEATHSIG=SIGKILL and no SIGTERM handler, as SGLang's schedulers.
- The model "loads" for ``--fake-load-seconds``, and until the file ``$FAKE_SGLANG_GATE``
  exists when that is set. The port is closed meanwhile (connection refused), and SIGTERM
  kills the server at once: SGLang has no handler yet.
- Then HTTP is up, status Starting: ``/health``, ``/health_generate`` and ``/ready`` answer
  503, ``/v1/models`` and ``/model_info`` 200. After the warmup it logs "The server is fired
  up and ready to roll!" on stderr (``[YYYY-mm-dd HH:MM:SS] ...``, like SGLang's logging) and
  the health endpoints answer 200. That line is an INFO log call: ``--log-level warning``
  (or higher) hides it, as in SGLang. ``$FAKE_SGLANG_READY_FILE``, when set, gets the
  wall-clock time of that moment (status Up) whatever the log level, for tests to compare.
- The health endpoints follow SGLang's http_server.py (0.5.6.post2 to 0.5.23): ``/health``
  and ``/health_generate`` run a one-token generation once Up, which answers after at least
  1 s (SGLang's check loop sleeps 1 s before it looks); ``/health`` is a flag check instead
  when ``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION`` is false. ``/ready`` (a flag check)
  exists only when the version played has it (>= 0.5.20): the installed ``sglang``
  distribution's version (``importlib.metadata``, e.g. a test's ``sglang-X.dist-info`` on
  ``PYTHONPATH``), else 0.5.8 (the Containerfile's base).
- ``--node-rank`` above 0: a multi-node worker. After the load it serves only SGLang's dummy
  health server on the port (``/health``, ``/health_generate``, ``/ping``: always 200) and
  never logs the ready line.
- ``POST /v1/chat/completions`` "generates" ``max_tokens`` tokens, ``--fake-token-delay``
  seconds each (``stream: true`` sends them as server-sent events); ``--api-key`` requires
  ``Authorization: Bearer KEY`` there and on ``/v1/models`` but never on ``/health*``.
- SIGTERM once HTTP is up: the health endpoints answer 503, running requests finish (the
  drain has no time limit, as in SGLang), the scheduler is shut down, what is left of the
  server's own children is SIGKILLed, exit 0.
- A scheduler that dies (SIGTERM sent to the whole group kills it: it has no handler) makes
  the server SIGKILL its children and itself, as SGLang's SIGQUIT crash path does: exit by
  signal 9, running requests cut off. SIGQUIT does the same.
- Edge tests (issue 30): ``$FAKE_SGLANG_EARLY_FILE``, when set, holds the number of
  ``POST /v1/chat/completions`` that arrived before the ready line (0 once HTTP is up);
  while the file ``$FAKE_SGLANG_UNHEALTHY_FILE`` exists, ``/health*`` answer 503 (a
  liveness failure). ``--fake-warmup-seconds`` is how long the port is open before ready.
- ``--fake-detached-scheduler`` adds a process that left the server's process tree
  (reparented to the subreaper, as SGLang's schedulers do in PR #31645) but is still in its
  process group and never exits by itself: only a SIGKILL to the group ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.metadata
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web

READY_LINE = "The server is fired up and ready to roll!"
READY_ENDPOINT_SINCE = (0, 5, 20)  # SGLang's GET /ready
DEFAULT_VERSION = "0.5.8"
GENERATION_CHECK_S = 1.0  # SGLang's health check loop: asyncio.sleep(1) before it looks
PR_SET_PDEATHSIG = 1
SCHEDULER_EXIT_TIMEOUT_S = 15.0  # SGLang's _SCHEDULER_EXIT_TIMEOUT_SECS
POLL_S = 0.02

log = logging.getLogger("fake_sglang")


def _setup_logging(level: str = "info") -> None:
    # SGLang logs through logging.basicConfig: stderr, "[YYYY-mm-dd HH:MM:SS] message",
    # at --log-level (prepare_server_args: getattr(logging, log_level.upper())).
    logging.basicConfig(
        format="[%(asctime)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
    )


def played_version() -> str:
    """The SGLang version this stand-in plays: the installed distribution's, else 0.5.8."""
    try:
        return importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_VERSION


def _release(version: str) -> tuple[int, ...]:
    head = version.split("+")[0].split(".post")[0]
    return tuple(int(p) for p in head.split(".")[:3] if p.isdigit())


def _health_generation_enabled() -> bool:
    # SGLang's EnvBool: "false", "0", "no", "n" (any case) turn it off; default true.
    raw = os.environ.get("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION", "true").strip().lower()
    return raw not in ("false", "0", "no", "n")


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG=SIGKILL, as SGLang's kill_itself_when_parent_died()."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


# ---- the child processes ----------------------------------------------------------------------


def run_scheduler() -> int:
    """A TP worker: holds "GPU memory" until the server closes its stdin (ShutdownReq)."""
    _setup_logging()
    _die_with_parent()
    log.info("Scheduler (pid %d) ready: loaded the model shard", os.getpid())
    sys.stdin.buffer.read()  # EOF = the server's ShutdownReq
    log.info("Scheduler (pid %d) received ShutdownReq, released GPU memory", os.getpid())
    return 0


def run_detacher() -> int:
    """Fork a scheduler that outlives this process, so it is reparented but keeps the pgid."""
    _setup_logging()
    pid = os.fork()
    if pid:
        os._exit(0)
    log.info("Detached scheduler (pid %d, pgid %d) holds the GPU", os.getpid(), os.getpgrp())
    sys.stderr.flush()
    while True:
        signal.pause()


# ---- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    """The main process's state: health status, running requests, its children."""

    model: str
    served_name: str
    api_key: str | None
    token_delay: float
    status: str = "Starting"  # -> "Up"; SGLang's ServerStatus
    draining: bool = False  # SIGTERM arrived
    shutting_down: bool = False  # our own shutdown: a scheduler exit is expected now
    running: int = 0  # requests in flight
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    scheduler: subprocess.Popen[bytes] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    # ---- endpoints ---------------------------------------------------------------------------

    def healthy(self) -> bool:
        return self.status == "Up" and not self.draining

    early: int = 0  # chat requests before Up ($FAKE_SGLANG_EARLY_FILE)

    def write_early(self) -> None:
        path = os.environ.get("FAKE_SGLANG_EARLY_FILE")
        if path:
            with open(path, "w") as file:
                file.write(f"{self.early}\n")

    async def health(self, request: web.Request) -> web.Response:
        # /health and /health_generate are one handler: a 1-token probe generation once Up,
        # except /health with SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION false (a flag check).
        sick = os.environ.get("FAKE_SGLANG_UNHEALTHY_FILE")
        if not self.healthy() or (sick and os.path.exists(sick)):
            return web.Response(status=503)
        if request.path == "/health" and not _health_generation_enabled():
            return web.Response(status=200)
        await asyncio.sleep(GENERATION_CHECK_S)
        return web.Response(status=200)

    async def ready(self, _request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy() else 503)

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _unauthorized(self) -> web.Response:
        return web.json_response({"error": "Unauthorized"}, status=401)

    async def models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        model = {
            "id": self.served_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sglang",
            "root": self.served_name,
            "max_model_len": 4096,
        }
        return web.json_response({"object": "list", "data": [model]})

    async def model_info(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        return web.json_response(
            {"model_path": self.model, "served_model_name": self.served_name, "is_generation": True}
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self.status != "Up":
            self.early += 1
            self.write_early()
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = await request.json()
            messages = body["messages"]
            max_tokens = int(body.get("max_tokens", 16))
            stream = bool(body.get("stream", False))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        if not isinstance(messages, list) or not 1 <= max_tokens <= 4096:
            return web.json_response({"error": "bad request"}, status=400)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        self.running += 1
        log.info(
            "Prefill batch. #new-seq: 1, #new-token: %d, #running-req: %d",
            prompt_tokens,
            self.running,
        )
        try:
            ident = f"chatcmpl-{uuid.uuid4().hex}"
            if stream:
                return await self._stream(request, ident, max_tokens)
            tokens = []
            for i in range(max_tokens):
                await asyncio.sleep(self.token_delay)
                tokens.append(f"tok{i}")
            return web.json_response(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.served_name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(tokens)},
                            "finish_reason": "length",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": max_tokens,
                        "total_tokens": prompt_tokens + max_tokens,
                    },
                }
            )
        finally:
            self.running -= 1

    async def _stream(
        self, request: web.Request, ident: str, max_tokens: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(max_tokens):
            await asyncio.sleep(self.token_delay)
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "model": self.served_name,
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # ---- processes ---------------------------------------------------------------------------

    def spawn(self, role: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, __file__, f"--fake-role={role}"],
            stdin=subprocess.PIPE if role == "scheduler" else subprocess.DEVNULL,
        )
        self.children.append(child)
        return child

    def kill_children(self) -> None:
        """SIGKILL the children still alive, as kill_process_tree(include_parent=False)."""
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                child.wait()

    def crash(self, why: str) -> None:
        """SGLang's SIGQUIT path: SIGKILL the tree and then itself."""
        log.error("%s; killing the process tree", why)
        self.kill_children()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    async def watch_scheduler(self) -> None:
        # SGLang's SubprocessWatchdog: a scheduler that dies takes the server down.
        while True:
            await asyncio.sleep(POLL_S)
            sched = self.scheduler
            if sched is not None and sched.poll() is not None and not self.shutting_down:
                self.crash(f"Scheduler exited unexpectedly (status {sched.returncode})")

    async def drain_and_exit(self) -> None:
        """After SIGTERM: wait for running requests, shut the scheduler down, kill the rest."""
        await self.stop.wait()
        log.info("Received sigterm; draining %d running request(s)", self.running)
        while self.running:
            await asyncio.sleep(POLL_S)
        log.info("Gracefully exiting... Remaining number of requests 0")
        self.shutting_down = True
        sched = self.scheduler
        if sched is not None and sched.stdin is not None:
            sched.stdin.close()  # ShutdownReq
            deadline = time.monotonic() + SCHEDULER_EXIT_TIMEOUT_S
            while sched.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
        self.kill_children()
        log.info("Graceful shutdown complete")


async def _load(seconds: float, gate: str | None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or (gate is not None and not os.path.exists(gate)):
        await asyncio.sleep(POLL_S)


async def serve(args: argparse.Namespace) -> int:
    """Run the server through its whole life; returns the exit status."""
    server = Server(
        model=args.model_path,
        served_name=args.served_model_name or args.model_path,
        api_key=args.api_key,
        token_delay=args.fake_token_delay,
    )
    log.info(
        "server_args=ServerArgs(model_path=%r, host=%r, port=%d, tp_size=%s)",
        args.model_path,
        args.host,
        args.port,
        args.tp_size,
    )
    version = played_version()
    if args.node_rank > 0:
        return await serve_worker(args)
    server.scheduler = server.spawn("scheduler")
    if args.fake_detached_scheduler:
        server.spawn("detacher").wait()  # its child lives on, reparented, in our group
    watchdog = asyncio.create_task(server.watch_scheduler())
    loop = asyncio.get_running_loop()
    # SIGQUIT is how SGLang's children report a failure; it always takes the crash path.
    loop.add_signal_handler(signal.SIGQUIT, server.crash, "Received SIGQUIT")
    started = time.monotonic()
    log.info("Load weight begin. avail mem=79.10 GB")
    await _load(args.fake_load_seconds, os.environ.get("FAKE_SGLANG_GATE"))
    log.info("Load weight end. type=FakeForCausalLM, dtype=torch.bfloat16, mem usage=0.01 GB")
    log.info("Engine startup timings (s): load_weight=%.2f", time.monotonic() - started)

    app = web.Application()
    app.router.add_get("/health", server.health)
    app.router.add_get("/health_generate", server.health)
    if _release(version) >= READY_ENDPOINT_SINCE:
        app.router.add_get("/ready", server.ready)
    app.router.add_get("/v1/models", server.models)
    app.router.add_get("/model_info", server.model_info)
    app.router.add_post("/v1/chat/completions", server.chat)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    server.write_early()  # 0 from here on, until a request comes early
    # From here on SIGTERM drains (uvicorn's handler, then the TokenizerManager's).
    loop.add_signal_handler(signal.SIGTERM, server.stop.set)
    log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", args.host, args.port)
    draining = asyncio.create_task(server.drain_and_exit())
    warmup_done = asyncio.create_task(asyncio.sleep(args.fake_warmup_seconds))
    await asyncio.wait({draining, warmup_done}, return_when=asyncio.FIRST_COMPLETED)
    if not server.stop.is_set():
        server.status = "Up"
        _record_ready_moment()
        log.info(READY_LINE)
    await draining
    watchdog.cancel()
    await runner.cleanup()
    return 0


def _record_ready_moment() -> None:
    path = os.environ.get("FAKE_SGLANG_READY_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(repr(time.time()))


async def serve_worker(args: argparse.Namespace) -> int:
    """A rank > 0: load, then only SGLang's dummy health server (always 200) until SIGTERM."""
    await _load(args.fake_load_seconds, os.environ.get("FAKE_SGLANG_GATE"))

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    for path in ("/health", "/health_generate", "/ping"):
        app.router.add_get(path, ok)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """SGLang's flags this stand-in uses, its own ``--fake-*`` ones; the rest is ignored."""
    p = argparse.ArgumentParser(prog="fake_sglang", allow_abbrev=False)
    p.add_argument("--model-path", "--model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--api-key")
    p.add_argument("--served-model-name")
    p.add_argument("--tp-size", "--tensor-parallel-size", "--tp")
    p.add_argument("--log-level", default="info")
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--fake-load-seconds", type=float, default=1.0)
    p.add_argument("--fake-warmup-seconds", type=float, default=0.3)
    p.add_argument("--fake-token-delay", type=float, default=0.01)
    p.add_argument("--fake-detached-scheduler", action="store_true")
    p.add_argument("--fake-role", choices=("server", "scheduler", "detacher"), default="server")
    args, _ignored = p.parse_known_args(argv)
    if args.fake_role == "server" and not args.model_path:
        p.error("--model-path is required")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.fake_role == "scheduler":
        return run_scheduler()
    if args.fake_role == "detacher":
        return run_detacher()
    _setup_logging(args.log_level)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
