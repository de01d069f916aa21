"""keygate's own limits, as the official `openai` Python package sees them.

Each test makes its own person and grant through the admin API (so the suites never share
a limiter state), then uses the SDK exactly as an app would. keygate refuses before the
upstream is called, in OpenAI's error shape, so the SDK raises the exception an app already
handles: RateLimitError for the 429s, AuthenticationError for an expired key,
PermissionDeniedError for a model with no price under a USD budget. The headers decide what
the SDK's own retry does: `Retry-After` / `retry-after-ms` are honoured, `x-should-retry:
false` stops it.

Run through tests/sdk/run.sh, which exports KG_BASE_URL, KG_PUBLIC_URL, KG_MOCK_URL,
KG_ADMIN_KEY, KG_OPENAI_KEY (the fake key the mock accepts) and KG_CONTROL_URL.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

MODEL = "gpt-4o-mini"
TIMEOUT_S = 30.0


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"missing {name}: run these tests through tests/sdk/run.sh")
    return value


def _call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def admin(method: str, path: str, body: Any = None) -> Any:
    status, answer = _call(
        method,
        _env("KG_PUBLIC_URL").rstrip("/") + path,
        body,
        {"authorization": f"Bearer {_env('KG_ADMIN_KEY')}"},
    )
    assert 200 <= status < 300, f"admin {method} {path}: {status} {answer}"
    return answer


def grant(**fields: Any) -> str:
    """A new person with the mock's OpenAI key and a grant made from `fields`; its apiKey."""
    user = admin("POST", "/admin/users", {"name": f"sdk-limits-{secrets.token_hex(4)}"})
    admin("PUT", f"/admin/users/{user['id']}/openai-key", {"api_key": _env("KG_OPENAI_KEY")})
    made = admin("POST", f"/admin/users/{user['id']}/grants", {"name": "sdk limits test", **fields})
    assert made["grant"]["limits"] is not None
    return made["api_key"]


def client(api_key: str, **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", TIMEOUT_S)
    return openai.OpenAI(api_key=api_key, base_url=_env("KG_BASE_URL"), **kwargs)


def counting_client(api_key: str, **kwargs: Any) -> tuple[openai.OpenAI, list[Any]]:
    """A client whose every HTTP attempt (first try and retries) is recorded, through the
    SDK's own HTTP client class (whichever HTTP library this SDK version uses)."""
    sent: list[Any] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [sent.append]}, timeout=TIMEOUT_S)
    return client(api_key, http_client=http, **kwargs), sent


def mock_requests() -> int:
    with urllib.request.urlopen(f"{_env('KG_MOCK_URL').rstrip('/')}/__mock/stats", timeout=10) as resp:
        return int(json.loads(resp.read())["requests"])


def user(content: str = "Say hello") -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def test_rpm_is_rate_limit_error_and_the_sdk_waits_retry_after() -> None:
    # 30 a minute: the bucket refills one request every 2 s, so Retry-After is 2 s — longer
    # than the SDK's own first backoff (≤ 0.5 s), which tells the two apart.
    key = grant(limits={"rpm": 30})
    c = client(key)
    for _ in range(30):
        c.chat.completions.create(model=MODEL, messages=user(), max_tokens=5)
    before = mock_requests()
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model=MODEL, messages=user(), max_tokens=5)
    err = info.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    retry_after = int(err.response.headers["retry-after"])
    retry_after_ms = int(err.response.headers["retry-after-ms"])
    assert 1 <= retry_after <= 2 and 1000 <= retry_after_ms <= 2000, err.response.headers
    assert err.response.headers["x-ratelimit-limit-requests"] == "30"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert mock_requests() == before, "a refused request must not reach the upstream"

    # The SDK's own retry honours the header: the call succeeds on its second attempt, after
    # waiting about what keygate said.
    retrying, sent = counting_client(key, max_retries=2)
    started = time.monotonic()
    done = retrying.chat.completions.create(model=MODEL, messages=user(), max_tokens=5)
    waited = time.monotonic() - started
    assert done.choices[0].message.content
    assert [r.headers.get("x-stainless-retry-count") for r in sent] == ["0", "1"]
    assert waited >= 1.0, f"the SDK retried after {waited:.2f}s, before keygate's Retry-After"


def test_tpm_is_rate_limit_error() -> None:
    key = grant(limits={"tpm": 200})
    c = client(key)
    # The first answer really uses ~160 tokens (the mock writes 150); the second reserves
    # its prompt plus max_tokens (150), which no longer fits the minute.
    c.chat.completions.create(
        model=MODEL, messages=user(), max_tokens=150, extra_headers={"x-mock-completion-tokens": "150"}
    )
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model=MODEL, messages=user(), max_tokens=150)
    assert info.value.code == "rate_limit_exceeded"
    assert "tokens per minute" in info.value.message
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert info.value.response.headers["x-ratelimit-limit-tokens"] == "200"


def test_budget_spent_is_insufficient_quota_and_never_retried() -> None:
    # $0.000001 a day: less than one request's reservation of gpt-4o-mini.
    key = grant(limits={"budget": {"usd": 0.000001, "period": "day"}})
    c, sent = counting_client(key, max_retries=2)
    before = mock_requests()
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model=MODEL, messages=user(), max_tokens=5)
    err = info.value
    assert err.status_code == 429 and err.code == "insufficient_quota"
    assert err.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1, "x-should-retry: false must stop the SDK's retries"
    assert mock_requests() == before


def test_concurrency_cap_is_rate_limit_error_with_retry_after_1() -> None:
    key = grant(limits={"max_concurrency": 1})
    c = client(key)
    # One slow stream holds the only slot.
    stream = c.chat.completions.create(
        model=MODEL,
        messages=user(),
        stream=True,
        extra_headers={"x-mock-scenario": "long-stream", "x-mock-delay-ms": "100"},
    )
    first = next(iter(stream))
    assert first.choices
    try:
        with pytest.raises(openai.RateLimitError) as info:
            c.chat.completions.create(model=MODEL, messages=user())
        assert info.value.code == "concurrency_limit_exceeded"
        assert info.value.response.headers["retry-after"] == "1"
    finally:
        stream.close()
    # The slot is released when the stream ends: the app may go on.
    deadline = time.monotonic() + 10
    while True:
        try:
            c.chat.completions.create(model=MODEL, messages=user())
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the concurrency slot was never released"
            time.sleep(0.1)


def test_two_parallel_streams_with_a_cap_of_one() -> None:
    key = grant(limits={"max_concurrency": 1})
    c = client(key)
    results: list[str] = []

    def run() -> None:
        try:
            for _ in c.chat.completions.create(
                model=MODEL,
                messages=user(),
                stream=True,
                extra_headers={"x-mock-delay-ms": "200"},
            ):
                pass
            results.append("ok")
        except openai.RateLimitError as e:
            results.append(str(e.code))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["concurrency_limit_exceeded", "ok"], results


def test_expired_key_is_authentication_error() -> None:
    control = _env("KG_CONTROL_URL").rstrip("/")
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    key = grant(expires_at=expires)
    c = client(key)
    c.chat.completions.create(model=MODEL, messages=user())
    assert _call("POST", f"{control}/advance?secs=7200")[0] == 204
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            c.chat.completions.create(model=MODEL, messages=user())
        assert info.value.status_code == 401 and info.value.code == "expired_api_key"
    finally:
        assert _call("POST", f"{control}/reset")[0] == 204


def test_unpriced_model_under_a_usd_budget_is_permission_denied() -> None:
    key = grant(limits={"budget": {"usd": 5, "period": "month"}})
    c = client(key)
    before = mock_requests()
    with pytest.raises(openai.PermissionDeniedError) as info:
        c.chat.completions.create(model="my-own-finetune-nobody-priced", messages=user())
    assert info.value.status_code == 403 and info.value.code == "model_not_priced"
    assert "my-own-finetune-nobody-priced" in info.value.message
    assert mock_requests() == before
    # A priced model goes through.
    c.chat.completions.create(model=MODEL, messages=user(), max_tokens=5)


def test_stream_usage_is_counted_without_the_app_asking() -> None:
    # A budget makes keygate count; the app streams without include_usage and must see
    # exactly what OpenAI would send it: no usage chunk.
    key = grant(limits={"budget": {"tokens": 100000, "period": "month"}})
    c = client(key)
    chunks = list(c.chat.completions.create(model=MODEL, messages=user(), stream=True))
    assert chunks and all(ch.usage is None for ch in chunks)
    # Present even as `"usage": null` means keygate's own include_usage leaked through.
    assert all("usage" not in ch.model_fields_set for ch in chunks)
    assert all(ch.choices for ch in chunks), "the injected usage-only chunk reached the app"
    # Settled when keygate's side of the stream ends, a moment after the app read [DONE].
    deadline = time.monotonic() + 10
    while True:
        status, body = _call("GET", f"{_env('KG_BASE_URL')}/key", headers={"authorization": f"Bearer {key}"})
        assert status == 200, body
        if body["usage"]["requests"] == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert body["usage"]["requests"] == 1 and body["usage"]["tokens"] > 0, body
    assert body["remaining"]["tokens"] == 100000 - body["usage"]["tokens"]
