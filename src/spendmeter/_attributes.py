"""Pure: span attributes out of a LiteLLM call's arguments and response.

Nothing here touches OpenTelemetry; the functions take what LiteLLM was given or gave back and
return plain attribute dicts, so they are cheap to test and cheap to call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from spendmeter import semconv as sc
from spendmeter._fields import field, fields
from spendmeter._numbers import number

AttributeValue = str | bool | int | float | Sequence[str]
Attributes = dict[str, AttributeValue]

# LiteLLM argument -> attribute, for numbers copied as they are when given.
_NUMERIC_REQUEST_PARAMS: tuple[tuple[str, str], ...] = (
    ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", sc.GEN_AI_REQUEST_TOP_P),
    ("top_k", sc.GEN_AI_REQUEST_TOP_K),
    ("frequency_penalty", sc.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", sc.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("seed", sc.GEN_AI_REQUEST_SEED),
)
# Every argument request_attributes reads but content: most calls give none of them.
_OPTIONAL_PARAMS = frozenset(
    (
        *(name for name, _ in _NUMERIC_REQUEST_PARAMS),
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "encoding_format",
        "user",
        "metadata",
        "api_base",
        "base_url",
        "service_tier",
        "response_format",
        "dimensions",
    )
)
# response_format types (OpenAI's, which LiteLLM takes for every provider) -> gen_ai.output.type.
_OUTPUT_TYPES = {
    "text": sc.OUTPUT_TYPE_TEXT,
    "json_object": sc.OUTPUT_TYPE_JSON,
    "json_schema": sc.OUTPUT_TYPE_JSON,
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One patched LiteLLM function, described once at instrument time."""

    call_type: str  # LiteLLM's call type: the name of the function, e.g. "acompletion"
    name: str  # gen_ai.operation.name
    positional: tuple[str, ...]  # LiteLLM's positional parameter names, in order
    is_async: bool

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
        """The call's arguments by name, as LiteLLM itself binds them."""
        if not args:
            return kwargs
        params = dict(zip(self.positional, args, strict=False))  # *args may run past them
        params.update(kwargs)
        return params


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


@lru_cache(maxsize=256)
def server_attributes(url: str) -> tuple[tuple[str, AttributeValue], ...]:
    """``server.address``/``server.port`` of an API base URL (cached: a handful per process)."""
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return ()
    if not host:
        return ()
    if port is None:
        port = {"https": 443, "http": 80}.get(parts.scheme)
    found: list[tuple[str, AttributeValue]] = [(sc.SERVER_ADDRESS, host)]
    if port is not None:
        found.append((sc.SERVER_PORT, port))
    return tuple(found)


def request_attributes(
    params: Mapping[str, Any],
    metadata_keys: Sequence[str],
    capture_content: bool,
    conversation_id_key: str | None = None,
) -> Attributes:
    """Optional request attributes: sampling parameters, output type, user, metadata,
    conversation, server, content."""
    attributes: Attributes = {}
    if not capture_content and params.keys().isdisjoint(_OPTIONAL_PARAMS):
        return attributes
    for name, key in _NUMERIC_REQUEST_PARAMS:
        value = number(params.get(name))
        if value is not None:
            attributes[key] = value
    max_tokens = number(params.get("max_tokens")) or number(params.get("max_completion_tokens"))
    if max_tokens is not None:
        attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    choices = number(params.get("n"))
    if choices is not None and choices != 1:
        attributes[sc.GEN_AI_REQUEST_CHOICE_COUNT] = choices
    stop = _strings(params.get("stop"))
    if stop:
        attributes[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = stop
    encoding = _strings(params.get("encoding_format"))
    if encoding:
        attributes[sc.GEN_AI_REQUEST_ENCODING_FORMATS] = encoding
    output_type = _output_type(params.get("response_format"))
    if output_type is not None:
        attributes[sc.GEN_AI_OUTPUT_TYPE] = output_type
    dimensions = number(params.get("dimensions"))
    if isinstance(dimensions, int) and dimensions > 0:
        attributes[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dimensions
    user = params.get("user")
    if isinstance(user, str) and user:
        attributes[sc.USER_ID] = user
    tier = params.get("service_tier")
    if isinstance(tier, str) and tier:
        attributes[sc.OPENAI_REQUEST_SERVICE_TIER] = tier
    if metadata_keys:
        attributes.update(metadata_attributes(params.get("metadata"), metadata_keys))
    if conversation_id_key is not None:
        conversation = _conversation_id(params.get("metadata"), conversation_id_key)
        if conversation is not None:
            attributes[sc.GEN_AI_CONVERSATION_ID] = conversation
    api_base = params.get("api_base") or params.get("base_url")
    if isinstance(api_base, str):
        attributes.update(server_attributes(api_base))
    if capture_content:
        messages = input_messages(params)
        if messages:
            attributes[sc.GEN_AI_INPUT_MESSAGES] = _json(messages)
        tools = params.get("tools")
        if isinstance(tools, list) and tools:
            attributes[sc.GEN_AI_TOOL_DEFINITIONS] = _json([_tool_definition(t) for t in tools])
    return attributes


def input_messages(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The call's input in semconv's message schema: chat messages (dicts or LiteLLM
    ``Message`` objects sent back as history) with text, tool-call and tool-response parts; a
    text completion's prompt or an embedding's input as one user message of text parts."""
    messages = params.get("messages")
    if isinstance(messages, (list, tuple)):
        return [_input_message(message) for message in messages]
    texts = _strings(params.get("prompt", params.get("input")))
    if not texts:
        return []
    return [{"role": "user", "parts": [{"type": "text", "content": text} for text in texts]}]


def _input_message(message: Any) -> dict[str, Any]:
    role = field(message, "role")
    role = role if isinstance(role, str) and role else "user"
    content = field(message, "content")
    if role in ("tool", "function"):  # the answer to a tool call the model asked for
        parts = [
            {
                "type": "tool_call_response",
                "id": field(message, "tool_call_id"),
                "response": content,
            }
        ]
    else:
        parts = _content_parts(content)
        parts.extend(_tool_call_part(call) for call in field(message, "tool_calls") or ())
    found: dict[str, Any] = {"role": role, "parts": parts}
    name = field(message, "name")
    if isinstance(name, str) and name:
        found["name"] = name
    return found


def _content_parts(content: Any) -> list[dict[str, Any]]:
    """A message's content as parts: a string is one text part; OpenAI-style content parts map
    to semconv's (text; an image or file by its URL); any other part is kept as given."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    if not isinstance(content, (list, tuple)):
        return []
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = field(part, "type")
        if kind == "text":
            parts.append({"type": "text", "content": field(part, "text")})
        elif kind == "image_url":
            image = field(part, "image_url")
            url = image if isinstance(image, str) else field(image, "url")
            parts.append({"type": "uri", "modality": "image", "uri": url})
        else:
            parts.append(dict(part) if isinstance(part, Mapping) else {"type": str(kind)})
    return parts


def _tool_call_part(call: Any) -> dict[str, Any]:
    function = field(call, "function")
    return {
        "type": "tool_call",
        "id": field(call, "id"),
        "name": field(function, "name"),
        "arguments": field(function, "arguments"),
    }


def _output_type(response_format: Any) -> str | None:
    """``gen_ai.output.type`` of a ``response_format``: a dict with a ``type``, or a pydantic
    model class (LiteLLM turns it into a JSON schema)."""
    if isinstance(response_format, Mapping):
        return _OUTPUT_TYPES.get(response_format.get("type"))  # type: ignore[arg-type]
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return sc.OUTPUT_TYPE_JSON
    return None


def _conversation_id(metadata: Any, key: str) -> str | None:
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value) or None


def _tool_definition(tool: Any) -> Any:
    """An OpenAI-style tool (``{"type": "function", "function": {...}}``) in semconv's flat
    shape (type, name, description, parameters); any other tool as given."""
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(function, Mapping):
        return tool
    definition = {"type": tool.get("type", "function"), "name": function.get("name")}
    for name in ("description", "parameters"):
        if function.get(name) is not None:
            definition[name] = function[name]
    return definition


def metadata_attributes(metadata: Any, keys: Sequence[str]) -> Attributes:
    """``spendmeter.metadata.<key>`` for the listed keys only: metadata may hold secrets."""
    if not isinstance(metadata, Mapping):
        return {}
    found: Attributes = {}
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, (str, bool, int, float)):
            found[sc.SPENDMETER_METADATA_PREFIX + key] = value
    return found


def response_attributes(
    response_id: Any,
    model: Any,
    finish_reasons: Sequence[str],
    service_tier: Any = None,
    dimensions: int | None = None,
    output_messages: list[dict[str, Any]] | None = None,
) -> Attributes:
    """What a call brought back, plain or streamed: response id, model, finish reasons,
    service tier, embedding dimensions and (when content is captured) output messages."""
    attributes: Attributes = {}
    if isinstance(response_id, str) and response_id:
        attributes[sc.GEN_AI_RESPONSE_ID] = response_id
    if isinstance(model, str) and model:
        attributes[sc.GEN_AI_RESPONSE_MODEL] = model
    if finish_reasons:
        attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(finish_reasons)
    if isinstance(service_tier, str) and service_tier:  # a pydantic extra field when sent
        attributes[sc.OPENAI_RESPONSE_SERVICE_TIER] = service_tier
    if dimensions is not None:
        attributes[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dimensions
    if output_messages:
        attributes[sc.GEN_AI_OUTPUT_MESSAGES] = _json(output_messages)
    return attributes


def plain_response_attributes(response: Any, capture_content: bool) -> Attributes:
    """``response_attributes`` of a response LiteLLM returned whole."""
    found = fields(response) or {}
    choices = found.get("choices")
    if not isinstance(choices, list):
        choices = []
    reasons = []
    for choice in choices:  # a loop, not comprehensions: no frames of their own, every call
        reason = field(choice, "finish_reason")
        if reason:
            reasons.append(str(reason))
    if not reasons:
        stop_reason = found.get("stop_reason")  # Anthropic-style messages
        if isinstance(stop_reason, str) and stop_reason:
            reasons = [stop_reason]
    data = found.get("data")
    return response_attributes(
        found.get("id"),
        found.get("model"),
        reasons,
        found.get("service_tier"),
        None if data is None else _embedding_dimensions(data),
        [_choice_output(c) for c in choices] if capture_content and choices else None,
    )


def _embedding_dimensions(data: Any) -> int | None:
    """The length of the returned vectors (not of base64 ones, which are strings)."""
    if not isinstance(data, list) or not data:
        return None
    vector = field(data[0], "embedding")
    return len(vector) if isinstance(vector, list) and vector else None


def _choice_output(choice: Any) -> dict[str, Any]:
    finish_reason = field(choice, "finish_reason")
    message = field(choice, "message")
    if message is None:  # a text completion's choice
        return output_message(None, field(choice, "text"), None, None, finish_reason)
    return output_message(
        field(message, "role"),
        field(message, "content"),
        field(message, "reasoning_content"),
        field(message, "tool_calls"),
        finish_reason,
    )


def output_message(
    role: Any, text: Any, reasoning: Any, tool_calls: Any, finish_reason: Any
) -> dict[str, Any]:
    """One output message in semconv's schema: reasoning, text and tool calls as parts."""
    parts: list[dict[str, Any]] = []
    if isinstance(reasoning, str) and reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    if isinstance(text, str) and text:
        parts.append({"type": "text", "content": text})
    if isinstance(tool_calls, list):
        parts.extend(_tool_call_part(call) for call in tool_calls)
    message: dict[str, Any] = {"role": role if isinstance(role, str) else "assistant"}
    message["parts"] = parts
    if finish_reason:
        message["finish_reason"] = str(finish_reason)
    return message


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def error_type(error: BaseException) -> str:
    return type(error).__qualname__


# Credentials a provider or proxy may echo in an error: bearer tokens, `key=`/`api_key=` in
# URLs and bodies, and key-shaped strings (OpenAI's sk-..., Google's AIza..., AWS access keys).
_SECRET_PATTERNS = re.compile(
    r"(?i)(bearer\s+)[^\s'\",]+"
    r"|((?:(?:api[_-]?)?key|token|secret|password|signature|sig)=)[^&\s'\",]+"
    r"|(\"?(?:api[_-]?key|x-api-key|authorization|api-key)\"?\s*[:=]\s*\"?)"
    r"(?:bearer\s+)?[^\s'\",}]+"
    r"|\bsk-[a-z0-9_\-]{8,}"
    r"|\bAIza[0-9a-z_\-]{20,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
)


def error_description(error: BaseException, params: Mapping[str, Any]) -> str:
    """An error's text fit for a span: the call's own credentials and anything shaped like
    one are replaced by ``[REDACTED]``."""
    text = str(error)
    for name in ("api_key", "azure_ad_token", "aws_secret_access_key", "aws_session_token"):
        secret = params.get(name)
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    return _SECRET_PATTERNS.sub(_redacted, text)


def _redacted(match: re.Match[str]) -> str:
    kept = next((group for group in match.groups() if group), "")
    return f"{kept}[REDACTED]"
