"""A tiny HTTP helper for the emulator tests: real requests over loopback, nothing mocked."""

from __future__ import annotations

from typing import Any

import requests

from airflow_provider_m3ter.emulator import Emulator


class Api:
    """Calls one emulator the way a client would: token first, then bearer-authenticated requests."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.session = requests.Session()
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            response = self.session.post(
                self.emu.config_url + "/oauth/token",
                auth=(self.emu.access_key_id, self.emu.api_secret),
                data={"grant_type": "client_credentials"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            self._token = response.json()["access_token"]
        return self._token

    def url(self, path: str, api: str = "config") -> str:
        base = self.emu.ingest_url if api == "ingest" else self.emu.config_url
        if path.startswith("/"):
            return base + path
        return f"{base}/organizations/{self.emu.org_id}/{path}"

    def call(self, method: str, path: str, *, api: str = "config", token: str | None = None, **kwargs: Any):
        headers = kwargs.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {token or self.token()}")
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.url(path, api), headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.call("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any):
        return self.call("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any):
        return self.call("DELETE", path, **kwargs)

    def ingest(self, measurements: list[dict[str, Any]], **kwargs: Any):
        return self.post("measurements", api="ingest", json={"measurements": measurements}, **kwargs)

    def ok(self, response: requests.Response) -> Any:
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        return response.json()

    def create_meter(self, code: str = "api_calls", **overrides: Any) -> dict[str, Any]:
        body = meter_body(code, **overrides)
        return self.ok(self.post("meters", json=body))


def meter_body(code: str = "api_calls", **overrides: Any) -> dict[str, Any]:
    """A valid meter request with a WHO field, a MEASURE field and a derived field."""
    body: dict[str, Any] = {
        "code": code,
        "name": f"Meter {code}",
        "dataFields": [
            {"category": "WHO", "code": "user", "name": "User"},
            {"category": "MEASURE", "code": "calls", "name": "Calls", "unit": "count"},
        ],
        "derivedFields": [
            {
                "category": "MEASURE",
                "code": "doubled",
                "name": "Doubled",
                "unit": "count",
                "calculation": "calls*2",
            }
        ],
    }
    body.update(overrides)
    return body


def measurement(uid: str | None = "u-1", meter: str = "api_calls", account: str = "acme", **extra: Any):
    """A measurement valid for :func:`meter_body`'s meter."""
    m: dict[str, Any] = {
        "meter": meter,
        "account": account,
        "ts": "2024-05-01T10:00:00Z",
        "who": {"user": "ann"},
        "measure": {"calls": 3},
    }
    if uid is not None:
        m["uid"] = uid
    m.update(extra)
    return m
