"""An OpenAI-compatible HTTP server on loopback: chat completions (plain and streamed, with usage
in the last chunk) and embeddings, at OpenAI's paths and at Azure's deployment paths.

A real server, not a mocked transport: LiteLLM reaches it through the openai SDK (``azure/``) or
through its own HTTP client (``openai/``), as it would reach the provider, so that any other
instrumentation of those clients sees the call exactly as in production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fake_http import LoopbackServer

MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
VECTOR = [0.25, -0.5, 0.75]
USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
_CHUNK = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": MODEL}


def _chat() -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hello"},
            }
        ],
        "usage": USAGE,
    }


def _chunks() -> Iterator[dict[str, Any]]:
    delta = {"role": "assistant", "content": "hel"}
    yield {**_CHUNK, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {**_CHUNK, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}
    yield {**_CHUNK, "choices": [], "usage": USAGE}


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    return {
        "object": "list",
        "model": EMBEDDING_MODEL,
        "data": [{"object": "embedding", "index": i, "embedding": VECTOR} for i in range(count)],
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?", 1)[0]
        if path.endswith("/embeddings"):
            self._json(_embeddings(body))
        elif path.endswith("/chat/completions") and body.get("stream"):
            self._stream()
        elif path.endswith("/chat/completions"):
            self._json(_chat())
        else:
            self.send_error(404)

    def _json(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for chunk in _chunks():
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


class FakeOpenAIServer(LoopbackServer):
    """Serves on 127.0.0.1 at a free port from a background thread until ``stop()``."""

    def __init__(self) -> None:
        super().__init__(_Handler)

    def litellm_kwargs(self, provider: str, model: str) -> dict[str, Any]:
        """What a LiteLLM call names to reach this server as ``provider`` (openai or azure)."""
        if provider == "azure":
            # Azure's deployment paths, through the openai SDK's AzureOpenAI client.
            return {
                "model": f"azure/{model}",
                "api_base": self.url,
                "api_key": "fake-azure-key",
                "api_version": "2024-06-01",
            }
        return {"model": f"openai/{model}", "api_base": f"{self.url}/v1", "api_key": "sk-fake"}
