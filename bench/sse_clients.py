"""SSE subscribers for bench_sse.py: N streams in one gevent process (one greenlet each).

Usage: ``sse_clients.py HOST PORT KEY EXECUTION_ID N``. Prints ``ready`` once every stream has
its preamble, then, after the final event, one JSON line: per event the latencies (receive
time minus the event's ``sent_at``) in ms, and how many streams saw every event.
"""

from gevent import monkey

monkey.patch_all()

import json
import socket
import sys
import time

import gevent


def main() -> None:
    host, port, key, execution_id, n = sys.argv[1:6]
    request = (
        f"GET /progress/{execution_id} HTTP/1.0\r\nHost: {host}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    state = {"ready": 0}
    latencies: list[float] = []
    complete: list[int] = []

    def stream() -> None:
        sock = socket.create_connection((host, int(port)))
        sock.sendall(request)
        buffer, ready, seen = b"", False, 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received = time.time()
            buffer += chunk
            if not ready and b"retry:" in buffer:
                ready = True
                state["ready"] += 1
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                # The send time is read without decoding the whole event: the client's own
                # work per event stays small next to the server's.
                at = frame.find(b'"sent_at": ')
                if at < 0:
                    continue
                seen += 1
                end = at + 11
                while frame[end : end + 1] not in (b",", b"}", b""):
                    end += 1
                latencies.append((received - float(frame[at + 11 : end])) * 1000)
                if b"event: final" in frame:
                    complete.append(seen)
                    sock.close()
                    return
        complete.append(-seen)

    greenlets = [gevent.spawn(stream) for _ in range(int(n))]
    while state["ready"] < int(n):
        gevent.sleep(0.05)
        if all(g.dead for g in greenlets):
            break
    print("ready", flush=True)
    gevent.joinall(greenlets, timeout=600)
    print(json.dumps({"latencies_ms": latencies, "complete": complete}), flush=True)


if __name__ == "__main__":
    main()
