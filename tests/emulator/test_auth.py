"""OAuth token endpoint and bearer authentication on both listeners."""

from __future__ import annotations

import time

import requests

from tests.emulator.api import Api, measurement


def test_token_form_and_json_bodies(m3ter_emulator):
    emu = m3ter_emulator
    url = emu.config_url + "/oauth/token"
    form = requests.post(
        url, auth=(emu.access_key_id, emu.api_secret), data={"grant_type": "client_credentials"}, timeout=10
    )
    as_json = requests.post(
        url, auth=(emu.access_key_id, emu.api_secret), json={"grant_type": "client_credentials"}, timeout=10
    )
    for response in (form, as_json):
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 18000
        assert len(body["access_token"]) >= 32
    assert form.json()["access_token"] != as_json.json()["access_token"]
    assert emu.stats()["tokens_issued"] == 2


def test_token_refusals_have_message_bodies(m3ter_emulator):
    emu = m3ter_emulator
    url = emu.config_url + "/oauth/token"
    grant = {"grant_type": "client_credentials"}
    wrong_secret = requests.post(url, auth=(emu.access_key_id, "nope"), data=grant, timeout=10)
    wrong_key = requests.post(url, auth=("someone", emu.api_secret), data=grant, timeout=10)
    no_auth = requests.post(url, data=grant, timeout=10)
    wrong_grant = requests.post(
        url, auth=(emu.access_key_id, emu.api_secret), data={"grant_type": "password"}, timeout=10
    )
    no_grant = requests.post(url, auth=(emu.access_key_id, emu.api_secret), json={}, timeout=10)
    assert [r.status_code for r in (wrong_secret, wrong_key, no_auth)] == [401, 401, 401]
    assert [r.status_code for r in (wrong_grant, no_grant)] == [400, 400]
    for response in (wrong_secret, wrong_key, no_auth, wrong_grant, no_grant):
        assert set(response.json()) == {"message"}
        assert emu.api_secret not in response.text
    assert "grant_type" in wrong_grant.json()["message"]
    assert emu.stats()["tokens_issued"] == 0


def test_bearer_required_on_both_listeners(m3ter_emulator):
    api = Api(m3ter_emulator)
    for api_name, method, path in (("config", "GET", "meters"), ("ingest", "POST", "measurements")):
        missing = requests.request(
            method, api.url(path, api_name), json={"measurements": [measurement()]}, timeout=10
        )
        bogus = api.call(
            method, path, api=api_name, token="not-a-token", json={"measurements": [measurement()]}
        )
        assert missing.status_code == 403, api_name
        assert bogus.status_code == 403, api_name
        assert "message" in missing.json()
        assert "message" in bogus.json()
    assert m3ter_emulator.measurements() == []
    assert api.get("meters").status_code == 200


def test_other_org_in_path_is_forbidden(m3ter_emulator):
    api = Api(m3ter_emulator)
    response = api.get("/organizations/11111111-1111-4111-8111-111111111111/meters")
    assert response.status_code == 403
    ingest = api.post(
        "/organizations/11111111-1111-4111-8111-111111111111/measurements",
        api="ingest",
        json={"measurements": [measurement()]},
    )
    assert ingest.status_code == 403
    assert m3ter_emulator.measurements() == []


def test_expired_tokens_get_403_and_a_new_token_works(m3ter_emulator):
    api = Api(m3ter_emulator)
    assert api.get("meters").status_code == 200
    m3ter_emulator.expire_tokens()
    expired = api.get("meters")
    assert expired.status_code == 403
    assert "expired" in expired.json()["message"]
    assert api.ingest([measurement()]).status_code == 403
    api._token = None
    assert api.get("meters").status_code == 200
    assert api.ingest([measurement()]).status_code == 200


def test_reset_keep_tokens(m3ter_emulator):
    api = Api(m3ter_emulator)
    token = api.token()
    m3ter_emulator.reset(keep_tokens=True)
    assert api.get("meters", token=token).status_code == 200
    m3ter_emulator.reset()
    assert api.get("meters", token=token).status_code == 403


def test_token_ttl_option(m3ter_emulator_factory):
    emu = m3ter_emulator_factory(token_ttl=1, access_key_id="key-2", api_secret="secret-2", org_id="org-two")
    api = Api(emu)
    response = requests.post(
        emu.config_url + "/oauth/token",
        auth=("key-2", "secret-2"),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert response.json()["expires_in"] == 1
    assert emu.org_id == "org-two"
    assert api.get("meters").status_code == 200
    time.sleep(1.2)
    assert api.get("meters").status_code == 403
