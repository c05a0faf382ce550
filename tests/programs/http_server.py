"""A test HTTP server whose health a test controls.

    http_server.py PORT [--delay S] [--fail-for S] [--status N] [--health-file PATH] [--hang]

--delay: wait S seconds before listening; --fail-for: answer 503 for S seconds after that,
then 200; --status: always answer N; --health-file: answer 503 while PATH contains "fail";
--hang: accept connections and read requests but never answer.
Prints "listening at T" and "first 200 at T" (T = time.time() just before answering).
"""

import argparse
import asyncio
import os
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--fail-for", type=float, default=0.0)
    p.add_argument("--status", type=int, default=0)
    p.add_argument("--health-file")
    p.add_argument("--hang", action="store_true")
    args = p.parse_args()
    asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> None:
    served_200 = False

    def status_now(listening_at: float) -> int:
        if args.status:
            return args.status
        if time.time() - listening_at < args.fail_for:
            return 503
        if args.health_file and os.path.exists(args.health_file):
            with open(args.health_file) as f:
                if "fail" in f.read():
                    return 503
        return 200

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served_200
        try:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # request line and headers
            if args.hang:
                await asyncio.sleep(3600)
            status = status_now(listening_at)
            body = b"ok\n" if status < 400 else b"unhealthy\n"
            headers = f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            if 300 <= status < 400:
                headers += "Location: /elsewhere\r\n"
            answered_at = time.time()
            writer.write(f"HTTP/1.1 {status} X\r\n{headers}\r\n".encode() + body)
            await writer.drain()
            if status == 200 and not served_200:
                served_200 = True
                print(f"first 200 at {answered_at:.6f}", flush=True)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    await asyncio.sleep(args.delay)
    listening_at = time.time()  # just before: no client can connect earlier than this
    server = await asyncio.start_server(handle, "127.0.0.1", args.port, reuse_address=True)
    print(f"listening at {listening_at:.6f}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    main()
