"""docs/openapi.yaml: a valid OpenAPI 3.1 description, served as committed, whose examples
and whose schemas hold for keygate's real answers.

- `openapi-spec-validator` validates the file (and the copy keygate serves, which must be
  the same bytes).
- Every example in it (media-type `example`/`examples`, schema `examples`) is validated
  against its schema with `openapi-schema-validator`'s OAS 3.1 dialect, `$ref`s resolved
  in the document.
- A few live answers of keygate-testenv (health, the admin lists, a grant, a usage
  report, `GET /v1/key`, a plan, errors) are validated against the schema the
  description gives for that operation and status.

That every route is described and every described operation routed is checked in Rust
(tests/testkit/tests/api/openapi.rs), against the router's own table.

Run through tests/sdk/run.sh (KG_PUBLIC_URL, KG_ADMIN_KEY, KG_KEY_ALL in the environment).
"""

from __future__ import annotations

import json
import os
import pathlib
import urllib.error
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


def _call(path: str, bearer: str | None = None) -> tuple[int, str, object]:
    req = urllib.request.Request(_env("KG_PUBLIC_URL").rstrip("/") + path)
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            status, ctype, body = res.status, res.headers["Content-Type"], res.read()
    except urllib.error.HTTPError as e:
        status, ctype, body = e.code, e.headers["Content-Type"], e.read()
    return status, ctype or "", json.loads(body) if body else None


def _conforms(spec: dict, template: str, method: str, path: str, bearer: str | None = None):
    """Calls `path`, finds the description's JSON schema for `template`'s `method` and the
    status answered, and validates the body against it. Returns the body."""
    status, ctype, body = _call(path, bearer)
    op = spec["paths"][template][method]
    response = op["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {path}: {status} is not described"
    pointer = f"/paths/{_escape(template)}/{method}/responses/{status}"
    if "$ref" in response:
        pointer = response["$ref"][1:]
        response = spec["components"]["responses"][pointer.rsplit("/", 1)[1]]
    assert ctype.startswith("application/json"), f"{path}: {ctype}"
    assert "application/json" in response["content"], f"{path}: JSON not described"
    errors = _errors(spec, f"{pointer}/content/application~1json/schema", body)
    assert not errors, f"{method.upper()} {path} ({status}): " + "; ".join(errors)
    return body


def test_live_answers_match_the_description(spec: dict) -> None:
    admin = _env("KG_ADMIN_KEY")
    grant_key = _env("KG_KEY_ALL")
    _conforms(spec, "/healthz", "get", "/healthz")
    _conforms(spec, "/readyz", "get", "/readyz")
    _conforms(spec, "/api/connect/plan", "get", "/api/connect/plan")
    users = _conforms(spec, "/admin/users", "get", "/admin/users?limit=2", admin)
    assert users, "keygate-testenv has people"
    user = users[0]["id"]
    _conforms(spec, "/admin/users/{id}", "get", f"/admin/users/{user}", admin)
    _conforms(spec, "/admin/keys", "get", "/admin/keys", admin)
    info = _conforms(spec, "/v1/key", "get", "/v1/key", grant_key)
    grant = info["id"]
    _conforms(spec, "/admin/grants/{id}", "get", f"/admin/grants/{grant}", admin)
    _conforms(spec, "/admin/grants/{id}/usage", "get", f"/admin/grants/{grant}/usage", admin)
    owner = _call(f"/admin/grants/{grant}", admin)[2]["user_id"]
    _conforms(spec, "/admin/users/{id}/grants", "get", f"/admin/users/{owner}/grants", admin)
    # Errors, in the shape and with the codes described.
    _conforms(spec, "/admin/users", "get", "/admin/users", "wrong-key")
    _conforms(spec, "/admin/users/{id}", "get", "/admin/users/aaaaaaaaaaaaaaaa", admin)
    _conforms(spec, "/admin/users", "get", "/admin/users?limit=0", admin)
    _conforms(spec, "/api/me", "get", "/api/me")
    _conforms(spec, "/v1/key", "get", "/v1/key")
    _conforms(spec, "/api/connect/plan", "get", "/api/connect/plan?name=no-such-plan")
