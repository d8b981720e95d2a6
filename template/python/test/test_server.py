"""Unit tests of {{name}}, with Flask's test client: `python3 -m pytest -q test`."""

import pytest

from server import app


@pytest.fixture
def client():
    app.config["TESTING"] = True
    return app.test_client()


def test_ping_answers_an_empty_object(client):
    r = client.get("/ping")
    assert r.status_code == 200
    assert r.is_json
    assert r.get_json() == {}


def test_version_reads_the_environment(client, monkeypatch):
    monkeypatch.setenv("PYM_VERSION", "1.2.3")
    monkeypatch.setenv("PYM_ENV", "staging")
    r = client.get("/version")
    assert r.status_code == 200
    assert r.get_json() == {"name": "{{name}}", "version": "1.2.3", "pym_env": "staging"}


def test_version_defaults(client, monkeypatch):
    monkeypatch.delenv("PYM_VERSION", raising=False)
    monkeypatch.delenv("PYM_ENV", raising=False)
    r = client.get("/version")
    assert r.status_code == 200
    assert r.get_json() == {"name": "{{name}}", "version": "dev", "pym_env": "local"}


def test_unknown_path_is_not_found(client):
    assert client.get("/nope").status_code == 404
