"""The official `openai` Python package, unchanged, pointed at keygate.

Run through `tests/sdk/run.sh`, which starts `keygate-testenv` (keygate in front of a mock
OpenAI upstream) and exports:

    KG_BASE_URL          keygate's public URL + /v1 (what an app puts in `base_url`)
    KG_MOCK_URL          the mock upstream itself (only for its /__mock control API)
    KG_KEY_ALL           grant key allowed every model
    KG_KEY_RESTRICTED    grant key allowed only gpt-4o-mini
    KG_KEY_REVOKED       grant key of a revoked grant
    KG_KEY_NOT_ENROLLED  grant key of a person with no OpenAI key stored
    KG_MAX_BODY_BYTES    keygate's request body limit

The tests only use the SDK's public API, the way an app would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

import openai
import pytest

MODEL = "gpt-4o-mini"
REPLY_TEXT = "Hello from the mock!"
REPLY_PIECES = ["Hello", " from", " the", " mock", "!"]
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Env:
    base_url: str
    mock_url: str
    key_all: str
    key_restricted: str
    key_revoked: str
    key_not_enrolled: str
    max_body_bytes: int


@pytest.fixture(scope="session")
def env() -> Env:
    names = [
        "KG_BASE_URL",
        "KG_MOCK_URL",
        "KG_KEY_ALL",
        "KG_KEY_RESTRICTED",
        "KG_KEY_REVOKED",
        "KG_KEY_NOT_ENROLLED",
        "KG_MAX_BODY_BYTES",
    ]
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run these tests through tests/sdk/run.sh")
    return Env(
        base_url=os.environ["KG_BASE_URL"],
        mock_url=os.environ["KG_MOCK_URL"].rstrip("/"),
        key_all=os.environ["KG_KEY_ALL"],
        key_restricted=os.environ["KG_KEY_RESTRICTED"],
        key_revoked=os.environ["KG_KEY_REVOKED"],
        key_not_enrolled=os.environ["KG_KEY_NOT_ENROLLED"],
        max_body_bytes=int(os.environ["KG_MAX_BODY_BYTES"]),
    )


@pytest.fixture
def make_client(env: Env) -> Callable[..., openai.OpenAI]:
    clients: list[openai.OpenAI] = []

    def make(api_key: str | None = None, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("timeout", TIMEOUT_S)
        c = openai.OpenAI(api_key=api_key or env.key_all, base_url=env.base_url, **kwargs)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(make_client: Callable[..., openai.OpenAI]) -> openai.OpenAI:
    # No retries: every test sees exactly what keygate answered, once.
    return make_client(max_retries=0)


# --- the mock's control API (talks to the mock directly, never through keygate) ---------


def mock_get(env: Env, op: str) -> Any:
    with urllib.request.urlopen(f"{env.mock_url}/__mock/{op}", timeout=10) as resp:
        return json.loads(resp.read())


def mock_requests(env: Env) -> int:
    return int(mock_get(env, "stats")["requests"])


def last_upstream_request(env: Env) -> dict[str, Any]:
    recorded = mock_get(env, "requests")
    assert recorded, "the mock upstream recorded no request"
    return recorded[-1]


def header_values(recorded: dict[str, Any], name: str) -> list[str]:
    """Values of a header in a recorded request (accepts a {name: value} map or pairs)."""
    headers = recorded.get("headers") or {}
    items = headers.items() if isinstance(headers, dict) else headers
    out: list[str] = []
    for item in items:
        k, v = (item[0], item[1]) if not isinstance(item, dict) else (item.get("name"), item.get("value"))
        if str(k).lower() == name.lower():
            out.extend(v if isinstance(v, list) else [v])
    return out


def recorded_json(recorded: dict[str, Any]) -> Any:
    body = recorded.get("body")
    if isinstance(body, str):
        return json.loads(body)
    return body


def user(content: str = "Say hello") -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


# --- happy paths -----------------------------------------------------------------------


def test_chat_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=user())
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == REPLY_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(REPLY_PIECES)
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion._request_id, "keygate must always send x-request-id"


def test_chat_raw_response_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=user())
    assert raw.status_code == 200
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("content-type", "").startswith("application/json")
    assert raw.parse().choices[0].message.content == REPLY_TEXT


def test_restricted_key_may_use_its_allowed_model(make_client: Callable[..., openai.OpenAI], env: Env) -> None:
    c = make_client(api_key=env.key_restricted, max_retries=0)
    completion = c.chat.completions.create(model=MODEL, messages=user())
    assert completion.choices[0].message.content == REPLY_TEXT


def test_upstream_gets_the_real_key_not_the_grant(client: openai.OpenAI, env: Env) -> None:
    client.chat.completions.create(model=MODEL, messages=user(), extra_headers={"Cookie": "session=app-secret"})
    recorded = last_upstream_request(env)
    assert recorded["path"].endswith("/chat/completions")
    auth = header_values(recorded, "authorization")
    assert len(auth) == 1 and auth[0].startswith("Bearer ")
    assert "kg_" not in auth[0], "the grant key must never reach the upstream"
    assert env.key_all not in json.dumps(recorded), "the grant key must never reach the upstream"
    assert header_values(recorded, "cookie") == [], "cookies must never reach the upstream"
    assert recorded_json(recorded)["model"] == MODEL


def test_chat_stream_arrives_incrementally(client: openai.OpenAI) -> None:
    arrivals: list[tuple[float, str]] = []
    chunks = []
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user(),
        stream=True,
        extra_headers={"x-mock-delay-ms": "200"},
    )
    with stream:
        for chunk in stream:
            chunks.append(chunk)
            for choice in chunk.choices:
                if choice.delta.content:
                    arrivals.append((time.monotonic(), choice.delta.content))

    assert "".join(text for _, text in arrivals) == REPLY_TEXT
    assert [text for _, text in arrivals] == REPLY_PIECES
    spread = arrivals[-1][0] - arrivals[0][0]
    # The mock waits 200 ms between events: ~0.8 s between the first and the last delta when
    # nothing buffers them. A proxy that buffers the stream delivers them all at once.
    assert spread >= 0.4, f"deltas arrived together ({spread:.3f}s apart): the stream was buffered"
    # The app did not ask for usage: keygate may ask the upstream for it, but must strip it.
    assert all(c.usage is None for c in chunks), "usage chunk leaked to an app that did not ask for it"
    assert all(c.choices for c in chunks), "a choices-less (usage) chunk leaked to the app"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_stream_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=user(),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == REPLY_TEXT
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1, f"expected exactly one usage chunk, got {len(usage_chunks)}"
    assert usage_chunks[0] is chunks[-1], "the usage chunk must be the last one"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == len(REPLY_PIECES)
    assert chunks[-1].usage.prompt_tokens > 0


def test_async_chat_stream(env: Env) -> None:
    async def run() -> list[tuple[float, str]]:
        async with openai.AsyncOpenAI(
            api_key=env.key_all, base_url=env.base_url, max_retries=0, timeout=TIMEOUT_S
        ) as aclient:
            stream = await aclient.chat.completions.create(
                model=MODEL,
                messages=user(),
                stream=True,
                extra_headers={"x-mock-delay-ms": "200"},
            )
            arrivals: list[tuple[float, str]] = []
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        arrivals.append((time.monotonic(), choice.delta.content))
            return arrivals

    arrivals = asyncio.run(run())
    assert "".join(text for _, text in arrivals) == REPLY_TEXT
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread >= 0.4, f"deltas arrived together ({spread:.3f}s apart): the stream was buffered"


def test_embeddings_default_base64(client: openai.OpenAI, env: Env) -> None:
    # Without encoding_format the SDK asks for base64 and decodes it to floats itself.
    result = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    sent = recorded_json(last_upstream_request(env))
    assert sent["encoding_format"] == "base64"
    assert len(result.data) == 2
    assert [d.index for d in result.data] == [0, 1]
    for d in result.data:
        assert isinstance(d.embedding, list)
        assert len(d.embedding) == 1536
        assert all(isinstance(x, float) for x in d.embedding)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0


def test_embeddings_dimensions_and_float(client: openai.OpenAI) -> None:
    b64 = client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=64)
    floats = client.embeddings.create(
        model="text-embedding-3-small", input="hello", dimensions=64, encoding_format="float"
    )
    assert len(b64.data[0].embedding) == 64
    assert len(floats.data[0].embedding) == 64
    assert b64.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_embeddings_explicit_base64_is_passed_through(client: openai.OpenAI) -> None:
    result = client.embeddings.create(
        model="text-embedding-3-small", input="hello", dimensions=16, encoding_format="base64"
    )
    raw = result.data[0].embedding
    assert isinstance(raw, str)
    assert len(base64.b64decode(raw)) == 16 * 4


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids
    assert "text-embedding-3-small" in ids
    model = client.models.retrieve("gpt-4o-mini")
    assert model.id == "gpt-4o-mini"
    assert model.object == "model"


def test_responses_create(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Say hello")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == REPLY_TEXT
    assert response.usage is not None
    assert response.usage.output_tokens == len(REPLY_PIECES)


def test_responses_stream(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input="Say hello", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == REPLY_TEXT
    assert events[-1].response.usage is not None


# --- errors: the SDK must raise the exception class an app would catch ----------------------


def _bad_keys() -> list[str]:
    return [
        "kg_" + secrets.token_urlsafe(32),  # looks like a grant, is not one
        "sk-" + secrets.token_hex(24),  # a random OpenAI-style key
        "sk-proj-" + secrets.token_urlsafe(48),
        "not a key at all",
    ]


@pytest.mark.parametrize("bad_key", _bad_keys(), ids=["kg-garbage", "sk-random", "sk-proj-random", "free-text"])
def test_bad_key_is_authentication_error(make_client: Callable[..., openai.OpenAI], env: Env, bad_key: str) -> None:
    c = make_client(api_key=bad_key, max_retries=0)
    before = mock_requests(env)
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model=MODEL, messages=user())
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert info.value.request_id, "keygate must always send x-request-id"
    assert mock_requests(env) == before, "the upstream must not be called for a bad key"


def test_bad_key_on_models_list(make_client: Callable[..., openai.OpenAI]) -> None:
    c = make_client(api_key="kg_" + secrets.token_urlsafe(32), max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        c.models.list()
    assert info.value.code == "invalid_api_key"


def test_bad_key_on_stream_raises_before_iteration(make_client: Callable[..., openai.OpenAI]) -> None:
    c = make_client(api_key="kg_" + secrets.token_urlsafe(32), max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model=MODEL, messages=user(), stream=True)
    assert info.value.code == "invalid_api_key"


def test_revoked_key(make_client: Callable[..., openai.OpenAI], env: Env) -> None:
    c = make_client(api_key=env.key_revoked, max_retries=0)
    before = mock_requests(env)
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model=MODEL, messages=user())
    assert info.value.status_code == 401
    assert info.value.code == "revoked_api_key"
    assert mock_requests(env) == before


def test_model_not_allowed(make_client: Callable[..., openai.OpenAI], env: Env) -> None:
    c = make_client(api_key=env.key_restricted, max_retries=0)
    before = mock_requests(env)
    with pytest.raises(openai.PermissionDeniedError) as info:
        c.chat.completions.create(model="gpt-4o", messages=user())
    assert info.value.status_code == 403
    assert info.value.code == "model_not_allowed"
    assert isinstance(info.value.body, dict) and info.value.body.get("message")
    assert mock_requests(env) == before, "the upstream must not be called for a forbidden model"


def test_model_not_allowed_when_streaming(make_client: Callable[..., openai.OpenAI], env: Env) -> None:
    c = make_client(api_key=env.key_restricted, max_retries=0)
    before = mock_requests(env)
    with pytest.raises(openai.PermissionDeniedError) as info:
        c.chat.completions.create(model="gpt-4o", messages=user(), stream=True)
    assert info.value.code == "model_not_allowed"
    assert mock_requests(env) == before


def test_request_too_large(client: openai.OpenAI, env: Env) -> None:
    before = mock_requests(env)
    huge = "x" * (env.max_body_bytes + 64 * 1024)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=user(huge))
    assert info.value.status_code == 413
    assert info.value.code == "request_too_large"
    assert mock_requests(env) == before, "the upstream must not be called for an oversized body"


def test_upstream_rate_limit_is_passed_through(client: openai.OpenAI, env: Env) -> None:
    before = mock_requests(env)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=user(), extra_headers={"x-mock-scenario": "error-429"})
    assert info.value.status_code == 429
    assert isinstance(info.value.body, dict) and info.value.body.get("message")
    assert mock_requests(env) == before + 1


def test_upstream_500_is_internal_server_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=user(), extra_headers={"x-mock-scenario": "error-500"})
    assert info.value.status_code == 500


def test_upstream_400_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=user(), extra_headers={"x-mock-scenario": "error-400"})
    assert info.value.status_code == 400


def test_not_enrolled_is_conflict(make_client: Callable[..., openai.OpenAI], env: Env) -> None:
    c = make_client(api_key=env.key_not_enrolled, max_retries=0)
    before = mock_requests(env)
    with pytest.raises(openai.ConflictError) as info:
        c.chat.completions.create(model=MODEL, messages=user())
    assert info.value.status_code == 409
    assert info.value.code == "key_not_enrolled"
    assert info.value.response.headers.get("x-should-retry") == "false"
    assert mock_requests(env) == before


def test_not_enrolled_is_not_retried_by_default(make_client: Callable[..., openai.OpenAI], env: Env) -> None:
    # Default client (2 retries): x-should-retry: false must stop the SDK retrying a 409.
    c = make_client(api_key=env.key_not_enrolled)
    with pytest.raises(openai.ConflictError) as info:
        c.chat.completions.create(model=MODEL, messages=user())
    # The SDK numbers its attempts in x-stainless-retry-count; the failing one must be the first.
    assert info.value.request.headers.get("x-stainless-retry-count") == "0"


def test_set_cookie_never_reaches_the_app(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(), extra_headers={"x-mock-scenario": "set-cookie"}
    )
    assert raw.status_code == 200
    assert "set-cookie" not in {k.lower() for k in raw.headers.keys()}
    raw.parse()


def test_reset_mid_stream_raises(client: openai.OpenAI) -> None:
    received: list[str] = []
    stream = client.chat.completions.create(
        model=MODEL, messages=user(), stream=True, extra_headers={"x-mock-scenario": "reset-mid-stream"}
    )
    # keygate ends a broken upstream stream abnormally: an SSE `error` event (which the SDK
    # raises as openai.APIError) and/or a truncated chunked body (which the SDK wraps in
    # openai.APIConnectionError, a subclass). A proxy that ended the stream cleanly, or with a
    # fake [DONE], would make this loop finish quietly.
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    received.append(choice.delta.content)
    assert "".join(received) != REPLY_TEXT
    if not isinstance(info.value, openai.APIConnectionError):
        assert info.value.code == "upstream_unavailable", info.value.body
