"""A fake provider behind LiteLLM's own HTTP clients: OpenAI's Responses, audio, image edit,
variation and video endpoints, Cohere's rerank, Anthropic's messages, Mistral's OCR, Perplexity's
search, Fireworks' decisions and Cloudflare's extraction, answered from memory on an
``httpx.MockTransport``, or on a loopback server for a call that takes no client (OCR, which
LiteLLM sends from its native core, search, decisions and extraction). It counts the
requests that reach it, so a test can tell a call that was refused before it left the process
from one that was sent.

Used for the call types LiteLLM cannot mock (transcription, speech, rerank, image edits, videos,
OCR, search, decisions, extraction) and for streams its mocks do not stream (Responses, messages).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler

RESPONSE = {
    "id": "resp_fake",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "model": "gpt-4o-mini",
    "output": [
        {
            "type": "message",
            "id": "msg_fake",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hello", "annotations": []}],
        }
    ],
    "usage": {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500},
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}
ANTHROPIC_MESSAGE = {
    "id": "msg_fake",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1000, "output_tokens": 200},
}
TRANSCRIPTION_SECONDS = 42.0
IMAGE_EDIT = {
    "created": 1,
    "data": [{"b64_json": "aGVsbG8="}],
    "usage": {
        "input_tokens": 50,
        "output_tokens": 1056,
        "total_tokens": 1106,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
    },
}
VIDEO = {
    "id": "video_fake",
    "object": "video",
    "status": "queued",
    "model": "sora-2",
    "created_at": 1,
    "seconds": "4",
    "size": "720x1280",
    "progress": 0,
}
SEARCH = {
    "id": "search_fake",
    "results": [{"title": "t", "url": "https://example.invalid", "snippet": "s", "date": "2026"}],
}
DECISION = {  # System One's format, which LiteLLM also turns into OpenAI's decision format
    "model": "rune",
    "answers": {"safe": {"type": "noul", "noul": 0.7}},
    "usage": {"input_tokens": 1000, "output_tokens": 0},
}
EXTRACTION = {
    "model": "clairic",
    "answers": {"amount": {"type": "number", "value": 12}},
    "truncated": False,
    "usage": {"input_tokens": 1000, "output_tokens": 0},
}
OCR_PAGES = 2
OCR = {
    "model": "mistral-ocr-latest",
    "pages": [
        {"index": i, "markdown": "hello", "images": [], "dimensions": None}
        for i in range(OCR_PAGES)
    ],
    "usage_info": {"pages_processed": OCR_PAGES, "doc_size_bytes": 1234},
}


def _responses_stream() -> bytes:
    events = [
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {**RESPONSE, "status": "in_progress", "output": [], "usage": None},
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "item_id": "msg_fake",
            "output_index": 0,
            "content_index": 0,
            "delta": "hello",
        },
        {"type": "response.completed", "sequence_number": 2, "response": RESPONSE},
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


@dataclass
class FakeHTTPProvider:
    requests: list[str] = field(default_factory=list)
    _server: LoopbackServer | None = None

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if path.endswith("/responses"):
            if json.loads(request.content or b"{}").get("stream"):
                return httpx.Response(
                    200, content=_responses_stream(), headers={"content-type": "text/event-stream"}
                )
            return httpx.Response(200, json=RESPONSE)
        if path.endswith("/audio/transcriptions"):
            return httpx.Response(
                200, json={"text": "hello", "duration": TRANSCRIPTION_SECONDS, "language": "en"}
            )
        if path.endswith("/audio/speech"):
            return httpx.Response(200, content=b"ID3fake", headers={"content-type": "audio/mpeg"})
        if path.endswith("/rerank"):
            return httpx.Response(
                200,
                json={
                    "id": "rerank_fake",
                    "results": [{"index": 0, "relevance_score": 0.9}],
                    "meta": {"billed_units": {"search_units": 1}},
                },
            )
        if path.endswith("/messages"):
            return httpx.Response(200, json=ANTHROPIC_MESSAGE)
        if path.endswith(("/images/edits", "/images/variations")):
            return httpx.Response(200, json=IMAGE_EDIT)
        if path.endswith(("/videos", "/remix", "/videos/edits", "/videos/extensions")):
            return httpx.Response(200, json=VIDEO)
        if path.endswith("/ocr"):
            return httpx.Response(200, json=OCR)
        if path.endswith("/search"):
            return httpx.Response(200, json=SEARCH)
        if path.endswith("/systemone"):
            return httpx.Response(200, json=DECISION)
        if "/ai/run/" in path:  # Cloudflare Workers AI runs the model named in the path
            return httpx.Response(200, json=EXTRACTION)
        return httpx.Response(404, json={"error": f"no fake for {path}"})

    async def aanswer(self, request: httpx.Request) -> httpx.Response:
        return self.answer(request)

    # --- clients, in the shapes LiteLLM's call types take them ------------------------------
    def http(self) -> HTTPHandler:
        return HTTPHandler(client=httpx.Client(transport=httpx.MockTransport(self.answer)))

    def async_http(self) -> AsyncHTTPHandler:
        handler = AsyncHTTPHandler()
        handler.client = httpx.AsyncClient(transport=httpx.MockTransport(self.aanswer))
        return handler

    def openai(self) -> openai.OpenAI:
        transport = httpx.MockTransport(self.answer)
        return openai.OpenAI(api_key="sk-fake", http_client=httpx.Client(transport=transport))

    def async_openai(self) -> openai.AsyncOpenAI:
        transport = httpx.MockTransport(self.aanswer)
        return openai.AsyncOpenAI(
            api_key="sk-fake", http_client=httpx.AsyncClient(transport=transport)
        )

    def url(self) -> str:
        """The base URL of a loopback server that answers as :meth:`answer` does, for a call
        that takes no client (OCR, search, decisions, extraction)."""
        if self._server is None:
            self._server = LoopbackServer(_answering(self.answer))
        return self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, call_type: str, is_async: bool) -> Any:
        """The client argument a LiteLLM call of ``call_type`` sends its request through."""
        if call_type in ("transcription", "speech"):
            return self.async_openai() if is_async else self.openai()
        return self.async_http() if is_async else self.http()


class LoopbackServer:
    """Serves ``handler`` on 127.0.0.1 at a free port from a background thread until ``stop()``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _answering(answer: Callable[[httpx.Request], httpx.Response]) -> type[BaseHTTPRequestHandler]:
    """A request handler that answers each POST as ``answer`` answers it on a mock transport."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = httpx.Request(
                "POST", f"http://fake{self.path}", content=self.rfile.read(length)
            )
            response = answer(request)
            self.send_response(response.status_code)
            self.send_header("content-type", response.headers.get("content-type", ""))
            self.send_header("content-length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

    return Handler
