"""A cwbench task server written from docs/websocket.md alone (Python, the
`websockets` package): architecture (3), a task per request, answers as they
finish. It proves the protocol document is enough to be measured by
`coordinator --target`; coordinator/tests/websocket.rs runs it.

Usage: python3 server.py [PORT [CERT KEY]]  (prints "listening on PORT", then
serves until killed; with a PEM certificate and key, over TLS: wss://).
"""

import asyncio
import json
import ssl
import struct
import sys
import time

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

TASK = struct.Struct("<BQIIIBQ")  # type, id, class, work_units, sleep_us, flags, intended_us
RESPONSE = struct.Struct("<BQBQQ")  # type, id, outcome, queue_wait_ns, service_ns
OUTCOMES = ["completed", "crashed", "timed_out", "refused"]
IN_FLIGHT = 16


class BadFrame(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse(msg):
    """A task from a frame: (id, class, work_units, sleep_us, crash)."""
    if isinstance(msg, str):
        try:
            t = json.loads(msg)
        except ValueError as e:
            raise BadFrame(1007, f"invalid task: {e}")
        fields = {"id", "class", "work_units", "sleep_us", "crash", "intended_us"}
        if set(t) - fields:
            raise BadFrame(1008, f"unknown task fields: {sorted(set(t) - fields)}")
        if set(t) != fields:
            raise BadFrame(1007, f"invalid task: missing {sorted(fields - set(t))}")
        return t["id"], t["class"], t["work_units"], t["sleep_us"], t["crash"]
    if not msg or msg[0] != 0x01:
        raise BadFrame(1003, "unknown frame type")
    if len(msg) != TASK.size:
        code = 1007 if len(msg) < TASK.size else 1008
        raise BadFrame(code, f"task frame is {len(msg)} bytes, expected {TASK.size}")
    _, tid, cls, units, sleep_us, flags, _ = TASK.unpack(msg)
    if flags & ~1:
        raise BadFrame(1008, "unknown task fields: flag bits")
    return tid, cls, units, sleep_us, bool(flags & 1)


def compute(tid, units):
    x = 0
    for _ in range(units):
        x ^= tid ^ units
    return x


async def run(task, read_ns, binary):
    tid, _, units, sleep_us, crash = task
    start = time.monotonic_ns()
    compute(tid, units)
    outcome = 1 if crash else 0
    if not crash and sleep_us:
        await asyncio.sleep(sleep_us / 1e6)
    done = time.monotonic_ns()
    wait, service = start - read_ns, done - start
    if binary:
        return RESPONSE.pack(0x02, tid, outcome, wait, service)
    return json.dumps({"id": tid, "outcome": OUTCOMES[outcome],
                       "queue_wait_ns": wait, "service_ns": service})


async def handler(ws):
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def answer(task, read_ns, binary):
        try:
            await ws.send(await run(task, read_ns, binary))
        except ConnectionClosed:
            pass
        finally:
            slots.release()

    try:
        async for msg in ws:
            read_ns = time.monotonic_ns()
            try:
                task = parse(msg)
            except BadFrame as e:
                await ws.close(e.code, e.reason)
                return
            await slots.acquire()  # full: stop reading
            asyncio.create_task(answer(task, read_ns, isinstance(msg, bytes)))
    except ConnectionClosed:
        pass


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    tls = None
    if len(sys.argv) > 3:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[2], sys.argv[3])
    async with serve(handler, "127.0.0.1", port, max_size=65536, ssl=tls) as server:
        print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
