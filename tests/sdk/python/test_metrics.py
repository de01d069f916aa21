"""`GET /metrics` read by a real Prometheus text parser (`prometheus_client.parser`).

The counters move as the official SDK makes requests, and no label holds a secret or an
id: every label name is one keygate documents, and no label value is a key.

Run through tests/sdk/run.sh (KG_BASE_URL, KG_PUBLIC_URL, KG_KEY_ALL, KG_ADMIN_KEY,
KG_OPENAI_KEY in the environment; keygate-testenv sets no `metrics_token`).
"""

from __future__ import annotations

import os
import time
import urllib.request

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

MODEL = "gpt-4o-mini"
LABELS = {
    "group", "class", "model", "kind", "reason", "limits", "result", "source", "verdict",
    "writer", "le",
}
GROUPS = {"v1", "api", "admin", "connect", "web", "health"}


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"missing {name}: run these tests through tests/sdk/run.sh")
    return value


def _scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = _env("KG_PUBLIC_URL").rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as res:
        assert res.status == 200
        text = res.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("keygate_"), family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _v1_ok(samples) -> float:
    key = ("keygate_requests_total", (("class", "2xx"), ("group", "v1"), ("model", MODEL)))
    return samples.get(key, 0.0)


def test_metrics_parse_move_and_hold_no_secret() -> None:
    before = _scrape()
    client = openai.OpenAI(base_url=_env("KG_BASE_URL"), api_key=_env("KG_KEY_ALL"), max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    deadline = time.monotonic() + 5
    after = _scrape()
    while _v1_ok(after) < _v1_ok(before) + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = _scrape()
    assert _v1_ok(after) >= _v1_ok(before) + 2

    tokens = ("keygate_tokens_total", (("kind", "prompt"), ("model", MODEL)))
    assert after.get(tokens, 0.0) > before.get(tokens, 0.0)

    secrets = [_env("KG_KEY_ALL"), _env("KG_ADMIN_KEY"), _env("KG_OPENAI_KEY")]
    for name, labels in after:
        for label, value in labels:
            assert label in LABELS, (name, label)
            if label == "group":
                assert value in GROUPS, value
            for secret in secrets:
                assert secret not in value, name
