"""Acceptance tests of {{name}}: they run against a real server, wherever the pipeline
started it, named by PYM_SERVER_HOST, PYM_SERVER_PORT and PYM_ENV.

`python3 -m pytest -q testaccept`. Standard library only: the server is tested from
outside, as its clients see it.
"""

import json
import os
import urllib.error
import urllib.request

import pytest

VARIABLES = ("PYM_SERVER_HOST", "PYM_SERVER_PORT", "PYM_ENV")


def server():
    """(base URL, PYM_ENV) of the server under test; the test fails, never skips, without them."""
    missing = [v for v in VARIABLES if not os.environ.get(v)]
    if missing:
        pytest.fail(
            "the acceptance tests need the server to test: set "
            + ", ".join(VARIABLES)
            + " (missing: "
            + ", ".join(missing)
            + ")",
            pytrace=False,
        )
    host, port = os.environ["PYM_SERVER_HOST"], os.environ["PYM_SERVER_PORT"]
    # PYM_SERVER_URL has the scheme: https on Cloud Run.
    return os.environ.get("PYM_SERVER_URL") or f"http://{host}:{port}", os.environ["PYM_ENV"]


def get(base, path):
    """(status, body as JSON) of GET base+path; an HTTP error status is returned, not raised."""
    try:
        request = urllib.request.Request(base + path)
        token = os.environ.get("PYM_SERVER_TOKEN")
        if token:  # a private service (Cloud Run without allUsers): an identity token
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except OSError as e:  # refused, timed out, unknown host, …
        pytest.fail(f"GET {base}{path}: cannot reach the server: {e}", pytrace=False)
    try:
        return status, json.loads(body)
    except ValueError:
        pytest.fail(f"GET {path}: {status}, not JSON: {body[:200]!r}", pytrace=False)


def test_ping_answers_an_empty_object():
    base, _ = server()
    status, body = get(base, "/ping")
    assert status == 200, body
    assert body == {}


def test_version_names_the_environment_it_runs_in():
    base, env = server()
    status, body = get(base, "/version")
    assert status == 200, body
    assert body.get("name") == "{{name}}", body
    assert body.get("pym_env") == env, body
    version = body.get("version")
    assert isinstance(version, str) and version, f"no version: {body}"
