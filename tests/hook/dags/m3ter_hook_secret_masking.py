"""Test DAG: tries hard to leak the API secret and the access tokens; Airflow must show only ``***``.

Run by tests/hook/test_secret_masking.py with ``airflow dags test`` against an emulator with a
known secret. The tokens the hook used are written to the file named by ``M3TER_TEST_TOKENS_FILE``
(a side channel outside Airflow) so the test knows what to look for.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import Any

import requests
from airflow.sdk import DAG, BaseOperator, task

from airflow_provider_m3ter.hooks.m3ter import M3terHook
from airflow_provider_m3ter.links import M3terConsoleLink, console_url, persist_console_link

log = logging.getLogger("airflow.task")


def _hook_with_token_spy(seen: list[str]) -> M3terHook:
    """A hook whose HTTP session records every bearer token it sends (public client option)."""
    session = requests.Session()

    def spy(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        auth = response.request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            seen.append(auth[len("Bearer ") :])

    session.hooks["response"].append(spy)
    return M3terHook(client_kwargs={"session": session})


def _record(kind: str, tokens: list[str]) -> None:
    with open(os.environ["M3TER_TEST_TOKENS_FILE"], "a", encoding="utf-8") as out:
        for token in dict.fromkeys(tokens):
            out.write(f"{kind} {token}\n")


class _ConsoleLinkOperator(BaseOperator):
    """Stores a Console link the way the provider's operators do."""

    operator_extra_links = (M3terConsoleLink(),)

    def execute(self, context: Any) -> None:
        org_id = M3terHook().get_client().settings.org_id
        persist_console_link(context, console_url(org_id, "meter", "meter-1"))


with DAG(
    dag_id="m3ter_hook_secret_masking",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["test"],
):

    @task
    def leak_in_logs() -> dict[str, str]:
        """Use two tokens (one refresh), then log and print them with the secret."""
        seen: list[str] = []
        hook = _hook_with_token_spy(seen)
        hook.request("GET", "meters", params={"pageSize": 1})
        client = hook.get_client()
        # expire the token in the emulator: the next call gets 403, fetches a new token, retries
        requests.post(f"{client.settings.config_url}/_emulator/tokens/expire", timeout=10)
        hook.request("GET", "meters", params={"pageSize": 1})
        _record("hook", seen)
        secret = client.settings.api_secret
        for token in dict.fromkeys(seen):
            log.info("LEAK-CHECK logger token=%s secret=%s", token, secret)
            print(f"LEAK-CHECK print token={token} secret={secret}")

        # control: a token fetched behind the hook's back is NOT registered, so it must show up
        raw = requests.post(
            f"{client.settings.config_url}/oauth/token",
            auth=(client.settings.access_key_id, secret),
            data={"grant_type": "client_credentials"},
            timeout=10,
        ).json()["access_token"]
        _record("control", [raw])
        log.info("LEAK-CHECK control token=%s", raw)
        return {"hook": repr(hook), "client": repr(client), "settings": repr(client.settings)}

    @task(retries=0)
    def leak_in_exception() -> None:
        """Fail with the token and the secret in the exception message."""
        seen: list[str] = []
        hook = _hook_with_token_spy(seen)
        hook.request("GET", "meters", params={"pageSize": 1})
        _record("hook", seen)
        secret = hook.get_client().settings.api_secret
        raise RuntimeError(f"LEAK-CHECK exception token={seen[-1]} secret={secret}")

    @task
    def leak_in_template(password: str) -> int:
        """Receive the API secret through a rendered template field."""
        log.info("LEAK-CHECK template secret=%s", password)
        return len(password)

    leak_in_logs()
    leak_in_exception()
    leak_in_template("{{ conn.m3ter_default.password }}")
    _ConsoleLinkOperator(task_id="console_link")
