"""A real HTTP server that speaks the OpenAI chat-completions protocol, for tests.

It runs on 127.0.0.1 on a random port in a thread. Tests script its answers (status, headers,
body) or give it a responder that builds a reply from the request, and read back what it got.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float

    @property
    def prompt(self) -> str:
        return "\n".join(m.get("content", "") for m in self.body.get("messages", []))


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (to make a client time out).
    delay: float = 0.0


def completion(content: str, *, prompt_tokens: int = 40, completion_tokens: int = 12) -> bytes:
    """A chat-completions response body with ``content`` and usage."""
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "test-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    ).encode()


class OpenAIServer:
    """Scripted answers first, then the responder (a 200 built from the request)."""

    def __init__(self) -> None:
        self.script: deque[Answer] = deque()
        self.requests: list[Received] = []
        self.responder: Callable[[Received], str] | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                received = Received(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw or b"{}"),
                    at=time.monotonic(),
                )
                answer = server._answer(received)
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def push(
        self,
        status: int,
        body: bytes | str,
        headers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Answer the next request with this (in the order pushed)."""
        data = body.encode() if isinstance(body, str) else body
        self.script.append(Answer(status, data, headers or {}, delay))

    def reply(self, content: str, **usage: int) -> None:
        """Answer the next request with a normal completion of ``content``."""
        self.push(200, completion(content, **usage))

    def _answer(self, received: Received) -> Answer:
        with self._lock:
            self.requests.append(received)
            if self.script:
                return self.script.popleft()
        if self.responder is not None:
            return Answer(200, completion(self.responder(received)))
        error = {"error": {"message": "no answer scripted", "type": "test"}}
        return Answer(500, json.dumps(error).encode())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


@contextmanager
def running() -> Iterator[OpenAIServer]:
    """A started server, stopped afterwards."""
    server = OpenAIServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
