"""docs/openapi.yaml: a valid OpenAPI 3.1 description, served as committed, whose examples
and whose schemas hold for keygate's real answers.

- `openapi-spec-validator` validates the file (and the copy keygate serves, which must be
  the same bytes).
- Every example in it (media-type `example`/`examples`, schema `examples`) is validated
  against its schema with `openapi-schema-validator`'s OAS 3.1 dialect, `$ref`s resolved
  in the document.
- Live answers of keygate-testenv are validated against the schema the description
  gives for that operation and status: health, a grant, a usage report, `GET /v1/key`;
  the paged lists (people, grants with filters, admin keys, the audit log) walked page by
  page through `Link` / `X-Next-Cursor`; usage summaries as JSON (each `group_by` form)
  and CSV; the operator key's view; plans (public); and errors, `insufficient_scope` from
  a `read` admin key made for the test among them.

That every route is described and every described operation routed is checked in Rust
(tests/testkit/tests/api/openapi.rs), against the router's own table.

Run through tests/sdk/run.sh (KG_PUBLIC_URL, KG_ADMIN_KEY, KG_KEY_ALL in the environment).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = pathlib.Path(__file__).resolve().parents[3]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"
BASE = "urn:keygate:openapi"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"missing {name}: run these tests through tests/sdk/run.sh")
    return value


@pytest.fixture(scope="module")
def spec() -> dict:
    doc = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    # YAML could have turned a bare date into a date object: the description must be
    # plain JSON data for every tool that reads it.
    json.dumps(doc)
    return doc


def _validator(spec: dict, pointer: str) -> OAS31Validator:
    registry = Registry().with_resource(
        BASE, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    return OAS31Validator(
        {"$ref": f"{BASE}#{pointer}"},
        registry=registry,
        format_checker=OAS31Validator.FORMAT_CHECKER,
    )


def _errors(spec: dict, pointer: str, instance) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator(spec, pointer).iter_errors(instance)
    ]


def _in_schema(pointer: str) -> bool:
    return "/schema" in pointer


def _escape(key) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def test_the_description_is_valid_openapi_3_1(spec: dict) -> None:
    assert spec["openapi"].startswith("3.1.")
    validate_spec(spec)


def test_every_example_matches_its_schema(spec: dict) -> None:
    checked = 0
    failures = []

    def walk(node, pointer: str) -> None:
        nonlocal checked
        if isinstance(node, dict):
            # A media type or a parameter: `example` / `examples` beside `schema`.
            if "schema" in node:
                samples = []
                if "example" in node:
                    samples.append(("example", node["example"]))
                for name, ex in (node.get("examples") or {}).items():
                    if isinstance(ex, dict) and "value" in ex:
                        samples.append((f"examples/{name}", ex["value"]))
                for where, value in samples:
                    checked += 1
                    for err in _errors(spec, f"{pointer}/schema", value):
                        failures.append(f"{pointer}/{where}: {err}")
            # A schema: JSON Schema's `examples` list.
            elif isinstance(node.get("examples"), list) and _in_schema(pointer):
                for i, value in enumerate(node["examples"]):
                    checked += 1
                    for err in _errors(spec, pointer, value):
                        failures.append(f"{pointer}/examples/{i}: {err}")
            for key, value in node.items():
                walk(value, f"{pointer}/{_escape(key)}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{pointer}/{i}")

    walk(spec, "")
    assert not failures, "\n".join(failures)
    assert checked >= 20, f"only {checked} examples found"


def test_the_served_description_is_the_committed_file() -> None:
    url = _env("KG_PUBLIC_URL").rstrip("/") + "/openapi.yaml"
    with urllib.request.urlopen(url, timeout=10) as res:
        assert res.status == 200
        assert res.headers["Content-Type"] == "application/yaml"
        served = res.read()
    assert served == SPEC_PATH.read_bytes()
    validate_spec(yaml.safe_load(served))


# --- live answers against the description ------------------------------------------


class Answer:
    """One live answer: status, headers, body (JSON decoded when JSON)."""

    def __init__(self, status: int, headers, raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.ctype = headers.get("Content-Type") or ""
        self.raw = raw
        self.body = json.loads(raw) if raw and self.ctype.startswith("application/json") else None


def _call(
    path: str,
    bearer: str | None = None,
    method: str = "GET",
    body=None,
    headers: dict[str, str] | None = None,
) -> Answer:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        _env("KG_PUBLIC_URL").rstrip("/") + path, data=data, method=method
    )
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return Answer(res.status, res.headers, res.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


def _response(spec: dict, template: str, method: str, status: int) -> tuple[str, dict]:
    """The description's response object for `template`'s `method` and `status`, and its
    JSON pointer (a `$ref` to a shared response followed)."""
    op = spec["paths"][template][method]
    response = op["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {template}: {status} is not described"
    pointer = f"/paths/{_escape(template)}/{method}/responses/{status}"
    if "$ref" in response:
        pointer = response["$ref"][1:]
        response = spec["components"]["responses"][pointer.rsplit("/", 1)[1]]
    return pointer, response


def _conforms(
    spec: dict,
    template: str,
    method: str,
    path: str,
    bearer: str | None = None,
    *,
    status: int | None = None,
    code: str | None = None,
    body=None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Calls `path`, finds the description's JSON schema for `template`'s `method` and the
    status answered, and validates the body against it. `status` / `code`: what the answer
    must be (an error's `code`). Returns the answer."""
    res = _call(path, bearer, method.upper(), body, headers)
    where = f"{method.upper()} {path}"
    if status is not None:
        assert res.status == status, f"{where}: {res.status} {res.raw[:300]!r}"
    pointer, response = _response(spec, template, method, res.status)
    if res.status == 204 or not res.raw:
        assert "content" not in response, f"{where}: no body, but one is described"
        return res
    assert res.ctype.startswith("application/json"), f"{where}: {res.ctype}"
    assert "application/json" in response["content"], f"{where}: JSON not described"
    errors = _errors(spec, f"{pointer}/content/application~1json/schema", res.body)
    assert not errors, f"{where} ({res.status}): " + "; ".join(errors)
    if code is not None:
        assert res.body["error"]["code"] == code, f"{where}: {res.body}"
    return res


def _next_link(spec: dict, template: str, res: Answer) -> str | None:
    """A paged answer's next page (relative URL), checked against the described headers:
    `Link: <…&cursor=X>; rel="next"` and `X-Next-Cursor: X`, both or neither."""
    _, response = _response(spec, template, "get", res.status)
    assert {"Link", "X-Next-Cursor"} <= set(response.get("headers", {})), template
    link, cursor = res.headers.get("Link"), res.headers.get("X-Next-Cursor")
    if link is None:
        assert cursor is None, f"{template}: X-Next-Cursor without Link"
        return None
    m = re.fullmatch(r'<(/[^>]*)>; rel="next"', link)
    assert m, f"{template}: Link {link!r}"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(m.group(1)).query)
    assert query.get("cursor") == [cursor], f"{template}: {link!r} vs {cursor!r}"
    return m.group(1)


def _walk(spec: dict, template: str, path: str, bearer: str) -> list:
    """Every item of a paged list, each page validated, following `Link` to the end."""
    items: list = []
    pages = 0
    while path is not None:
        res = _conforms(spec, template, "get", path, bearer, status=200)
        items.extend(res.body)
        path = _next_link(spec, template, res)
        pages += 1
        assert pages <= 1000, f"{template}: the pages do not end"
    return items


def _chat(grant_key: str) -> None:
    """One proxied request, so the usage summaries have a row."""
    req = urllib.request.Request(
        _env("KG_BASE_URL").rstrip("/") + "/chat/completions",
        data=json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        ).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {grant_key}"},
    )
    with urllib.request.urlopen(req, timeout=10) as res:
        assert res.status == 200


COUNTERS = [
    "requests",
    "errors",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "usd",
    "estimated",
]


def test_live_answers_match_the_description(spec: dict) -> None:
    admin = _env("KG_ADMIN_KEY")
    grant_key = _env("KG_KEY_ALL")
    _conforms(spec, "/healthz", "get", "/healthz")
    _conforms(spec, "/readyz", "get", "/readyz")
    _conforms(spec, "/api/connect/plan", "get", "/api/connect/plan")
    users = _conforms(spec, "/admin/users", "get", "/admin/users?limit=2", admin).body
    assert users, "keygate-testenv has people"
    user = users[0]["id"]
    _conforms(spec, "/admin/users/{id}", "get", f"/admin/users/{user}", admin)
    _conforms(spec, "/admin/keys", "get", "/admin/keys", admin)
    info = _conforms(spec, "/v1/key", "get", "/v1/key", grant_key).body
    grant = info["id"]
    _conforms(spec, "/admin/grants/{id}", "get", f"/admin/grants/{grant}", admin)
    _conforms(spec, "/admin/grants/{id}/usage", "get", f"/admin/grants/{grant}/usage", admin)
    owner = _call(f"/admin/grants/{grant}", admin).body["user_id"]
    _conforms(spec, "/admin/users/{id}/grants", "get", f"/admin/users/{owner}/grants", admin)
    # Errors, in the shape and with the codes described.
    _conforms(spec, "/admin/users", "get", "/admin/users", "wrong-key")
    _conforms(spec, "/admin/users/{id}", "get", "/admin/users/aaaaaaaaaaaaaaaa", admin)
    _conforms(spec, "/admin/users", "get", "/admin/users?limit=0", admin)
    _conforms(spec, "/api/me", "get", "/api/me")
    _conforms(spec, "/v1/key", "get", "/v1/key")
    _conforms(spec, "/api/connect/plan", "get", "/api/connect/plan?name=no-such-plan")


def test_live_paged_lists_follow_their_links(spec: dict) -> None:
    admin = _env("KG_ADMIN_KEY")
    # People, one per page: every page valid, `Link` and `X-Next-Cursor` agree, the walk
    # ends, and it sees each person once and the same people as one big page.
    first = _conforms(spec, "/admin/users", "get", "/admin/users?limit=1", admin, status=200)
    assert len(first.body) == 1
    assert _next_link(spec, "/admin/users", first), "keygate-testenv has more than one person"
    people = _walk(spec, "/admin/users", "/admin/users?limit=1", admin)
    ids = [p["id"] for p in people]
    assert len(ids) == len(set(ids)) >= 2
    whole = _conforms(spec, "/admin/users", "get", "/admin/users?limit=1000", admin).body
    assert ids == [p["id"] for p in whole]
    _conforms(spec, "/admin/users", "get", "/admin/users?cursor=%2A%2A", admin,
              status=400, code="invalid_request")

    # Every grant, then filtered: each one as `GET /admin/grants/{id}` shows it.
    grants = _walk(spec, "/admin/grants", "/admin/grants?limit=2", admin)
    assert len(grants) >= 2, "keygate-testenv has grants"
    one = grants[0]
    assert _call(f"/admin/grants/{one['id']}", admin).body == one
    for query, keep in [
        (f"user={one['user_id']}", lambda g: g["user_id"] == one["user_id"]),
        ("state=revoked", lambda g: g["state"] == "revoked"),
        ("state=active&limit=1", lambda g: g["state"] == "active"),
    ]:
        got = _walk(spec, "/admin/grants", f"/admin/grants?{query}", admin)
        assert [g["id"] for g in got] == [g["id"] for g in grants if keep(g)], query
    for bad in ["state=gone", "user=nobody", "origin=notanorigin"]:
        res = _conforms(spec, "/admin/grants", "get", f"/admin/grants?{bad}", admin,
                        status=400, code="invalid_request")
        assert res.body["error"]["param"] == bad.split("=")[0], res.body

    # Admin keys (scope admin), paged too.
    _walk(spec, "/admin/keys", "/admin/keys?limit=1", admin)


def test_live_usage_summaries_match_the_description(spec: dict) -> None:
    admin = _env("KG_ADMIN_KEY")
    _chat(_env("KG_KEY_ALL"))
    total = _conforms(spec, "/admin/usage", "get", "/admin/usage", admin, status=200).body
    assert total["group_by"] == [] and len(total["rows"]) == 1
    assert total["rows"][0] == total["total"] and total["total"]["requests"] >= 1
    for query, keys in [
        ("group_by=user&group_by=day", ["user", "day"]),
        ("group_by=model,grant", ["model", "grant"]),
        ("group_by=day&group_by=user,model", ["day", "user", "model"]),
    ]:
        res = _conforms(spec, "/admin/usage", "get", f"/admin/usage?{query}", admin, status=200)
        assert res.headers.get("Vary", "").lower() == "accept", res.headers
        summary = res.body
        assert summary["group_by"] == keys, query
        assert summary["rows"], query
        # Each row: exactly the keys asked for, in that order, then the counters.
        for row in summary["rows"]:
            assert list(row) == keys + COUNTERS, (query, row)
        assert sum(r["requests"] for r in summary["rows"]) == summary["total"]["requests"]

    # The CSV form: the described media type, a header line of the keys then the
    # counters, CRLF line ends, one line per JSON row.
    res = _call("/admin/usage?group_by=user,day", admin, headers={"Accept": "text/csv"})
    assert res.status == 200
    _, response = _response(spec, "/admin/usage", "get", 200)
    assert res.ctype in response["content"], res.ctype
    assert res.headers.get("Vary", "").lower() == "accept"
    text = res.raw.decode()
    assert text.endswith("\r\n")
    lines = text.split("\r\n")[:-1]
    assert lines[0] == ",".join(["user", "day"] + COUNTERS)
    rows = _call("/admin/usage?group_by=user,day", admin).body["rows"]
    assert len(lines) - 1 == len(rows)

    # Errors stay JSON, even when CSV was asked for.
    for bad, param in [
        ("group_by=users", "group_by"),
        ("group_by=user&group_by=user", "group_by"),
        ("from=yesterday", "from"),
        ("to=2026-02-31", "to"),
        ("from=2026-01-01&to=2027-06-01", "from"),
    ]:
        res = _conforms(spec, "/admin/usage", "get", f"/admin/usage?{bad}", admin,
                        status=400, code="invalid_request", headers={"Accept": "text/csv"})
        assert res.body["error"]["param"] == param, (bad, res.body)
    # The person's own summary needs a session (not available here): its 401.
    _conforms(spec, "/api/usage", "get", "/api/usage?group_by=day", status=401,
              code="not_signed_in")


def test_live_audit_entries_match_the_description(spec: dict) -> None:
    admin = _env("KG_ADMIN_KEY")
    entries = _walk(spec, "/admin/audit", "/admin/audit?limit=50", admin)
    assert entries, "keygate-testenv's setup is in the log"
    # Newest first: ids (the log's order) and times go down.
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    actions = {e["action"] for e in entries}
    assert {"user.created", "grant.created", "operator_key.set"} <= actions, actions
    # Filters select what they name.
    made = _conforms(spec, "/admin/audit", "get", "/admin/audit?action=user.created",
                     admin, status=200).body
    assert made and all(e["action"] == "user.created" for e in made)
    person = made[0]["user"]
    theirs = _walk(spec, "/admin/audit", f"/admin/audit?user={person}&limit=1", admin)
    assert theirs and all(e["user"] == person for e in theirs)
    _conforms(spec, "/admin/audit", "get", "/admin/audit?from=2000-01-01&to=2000-01-01",
              admin, status=200)
    for bad, param in [
        ("action=grant.create", "action"),
        ("user=nobody", "user"),
        ("from=yesterday", "from"),
        ("from=2026-12-01&to=2026-11-30", "to"),
        ("limit=1001", "limit"),
    ]:
        res = _conforms(spec, "/admin/audit", "get", f"/admin/audit?{bad}", admin,
                        status=400, code="invalid_request")
        assert res.body["error"]["param"] == param, (bad, res.body)
    # The person's own list needs a session (not available here): its 401.
    _conforms(spec, "/api/audit", "get", "/api/audit", status=401, code="not_signed_in")


def test_live_operator_key_and_plans_match_the_description(spec: dict) -> None:
    admin = _env("KG_ADMIN_KEY")
    # keygate-testenv sets an operator key (its `lent` plan lends it).
    view = _conforms(spec, "/admin/operator-key", "get", "/admin/operator-key", admin,
                     status=200).body
    assert view["set"] is True and set(view) == {"set", "kid", "updated_at"}
    # `GET /api/connect/plan` is public (no session): each plan's view, and the "no plan"
    # view, as described.
    lent = _conforms(spec, "/api/connect/plan", "get", "/api/connect/plan?name=lent",
                     status=200).body
    assert lent["use_operator_key"] is True
    starter = _conforms(spec, "/api/connect/plan", "get", "/api/connect/plan?name=starter",
                        status=200).body
    assert starter["use_operator_key"] is False and starter["limits"]["rpm"] == 60
    none = _conforms(spec, "/api/connect/plan", "get", "/api/connect/plan", status=200).body
    assert none["use_operator_key"] is False
    # The popup's Deny: the CSRF rule first, then the session (none here).
    _conforms(spec, "/api/connect/deny", "post", "/api/connect/deny",
              body={"origin": "https://notes.example"}, status=403, code="csrf_failed")
    public = _env("KG_PUBLIC_URL").rstrip("/")
    _conforms(spec, "/api/connect/deny", "post", "/api/connect/deny",
              body={"origin": "https://notes.example"}, headers={"Origin": public},
              status=401, code="not_signed_in")


def test_live_scopes_match_the_description(spec: dict) -> None:
    admin = _env("KG_ADMIN_KEY")
    created = _conforms(spec, "/admin/keys", "post", "/admin/keys", admin,
                        body={"name": "openapi read", "scope": "read"}, status=201).body
    read = created["key"]
    try:
        # What `read` may do, and the 403 `insufficient_scope` for what it may not, each in
        # the described shape.
        _conforms(spec, "/admin/users", "get", "/admin/users?limit=1", read, status=200)
        _conforms(spec, "/admin/audit", "get", "/admin/audit?limit=1", read, status=200)
        _conforms(spec, "/admin/usage", "get", "/admin/usage", read, status=200)
        for template, method, path, body in [
            ("/admin/keys", "get", "/admin/keys", None),
            ("/admin/operator-key", "get", "/admin/operator-key", None),
            ("/admin/users", "post", "/admin/users", {"name": "Nobody"}),
            ("/admin/users/{id}", "delete", "/admin/users/aaaaaaaaaaaaaaaa", None),
        ]:
            res = _conforms(spec, template, method, path, read, body=body, status=403,
                            code="insufficient_scope")
            assert "`write`" in res.body["error"]["message"] or "`admin`" in res.body[
                "error"
            ]["message"], res.body
    finally:
        _conforms(spec, "/admin/keys/{id}", "delete", f"/admin/keys/{created['id']}", admin,
                  status=204)
    _conforms(spec, "/admin/users", "get", "/admin/users", read, status=401,
              code="invalid_api_key")
