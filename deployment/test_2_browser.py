"""The Airflow UI with the provider, in Debian's chromium driven by playwright (issue 11's browser test).

Logs in, creates an m3ter connection through the form (labels, hidden fields, nothing pre-filled),
tests it (Airflow 3.3.2's Test button and the documented alternatives), and follows a finished
sensor task's "m3ter Console" link. Screenshots go to ``artifacts/e2e/screenshots`` (gitignored).
Run with ``make ui-test`` (or ``make e2e`` after the deployment test, on the same deployment).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from deployment.harness import ARTIFACTS, Deployment, say

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EXTRA_FIELDS = {
    "org_id": "Organization ID",
    "ingest_url": "Ingest API URL",
    "timeout": "Request timeout (seconds)",
    "max_attempts": "Attempts per request",
    "deadline": "Retry deadline per request (seconds)",
    "ingest_requests_per_second": "Ingest requests per second",
    "ingest_requests_per_window": "Ingest requests per 5 minutes",
    "config_requests_per_second": "Config requests per second",
    "config_requests_per_window": "Config requests per 5 minutes",
    "allow_insecure_http": "Allow plain http:// to a non-loopback host",
    "verify_tls": "Verify TLS certificates",
}


@pytest.fixture(scope="module")
def browser(deployment: Deployment) -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="make ui-test installs playwright")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: apt-get install chromium (.ci/run does it)")
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(deployment: Deployment) -> Path:
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    say(f"screenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def page(browser: Any, deployment: Deployment) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 2000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(deployment.url + "/", wait_until="networkidle")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", deployment.admin_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(deployment.url + "/")
    yield page
    context.close()


def _open_connections(page: Any, deployment: Deployment) -> None:
    page.goto(deployment.url + "/connections", wait_until="networkidle")


def _press_test(page: Any, conn_id: str) -> dict[str, Any]:
    """Press the connection list's Test button; return the API's answer to the UI's request."""
    row = page.get_by_role("row").filter(has_text=conn_id)
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
        row.get_by_role("button", name="Test Connection").click()
    response = answer.value
    sent = json.loads(response.request.post_data or "{}")
    return {"status": response.status, "body": response.json(), "sent": sent}


def _assert_nothing_prefilled(dialog: Any, fields: str) -> None:
    """Every field matched by ``fields`` is empty and every switch is off."""
    values = dialog.locator(fields).evaluate_all(
        "els => els.filter(e => e.type !== 'checkbox' && e.type !== 'hidden' && !e.readOnly"
        " && e.getAttribute('aria-hidden') !== 'true').map(e => [e.name || e.id, e.value])"
    )
    assert values
    assert [(name, value) for name, value in values if value] == []
    checked = dialog.locator("input[type=checkbox]").evaluate_all("els => els.filter(e => e.checked).length")
    assert checked == 0


def test_create_an_m3ter_connection_through_the_form(page: Any, deployment: Deployment, shots: Path) -> None:
    """Issue 11, item 4: relabeled and hidden fields, nothing pre-filled as a value."""
    emu = deployment.emulator
    for conn_id in ("m3ter_ui", "m3ter_mixed"):  # a repeated run on the same deployment starts clean
        deployment.api("DELETE", f"connections/{conn_id}", ok=(204, 404))
    _open_connections(page, deployment)
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=connection_id]").fill("m3ter_ui")
    kind = dialog.get_by_role("combobox")
    kind.click()
    kind.fill("m3ter")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "01-empty-standard-fields.png"), full_page=True)
    # the standard fields (open first): relabeled, Schema and Port hidden, defaults as placeholders
    text = dialog.inner_text()
    for label in ("Config API URL", "Access Key ID", "API Secret"):
        assert label in text, f"label {label!r} missing"
    assert dialog.locator("input[name=schema]").count() == 0
    assert dialog.locator("input[name=port]").count() == 0
    assert dialog.locator("input[name=host]").get_attribute("placeholder") == "https://api.m3ter.com"
    # Airflow 3.3.2's form always shows it; the README says so (fails when Airflow starts hiding it)
    assert "Extra Fields JSON" in text
    _assert_nothing_prefilled(dialog, "input[name=host], input[name=login], input[name=password], textarea")
    dialog.locator("input[name=host]").fill(emu.config_url)
    dialog.locator("input[name=login]").fill(emu.access_key_id)
    dialog.locator("input[name=password]").fill(deployment.emulator_secret)

    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    dialog.locator("input[name=element_org_id]").wait_for()
    page.screenshot(path=str(shots / "02-empty-extra-fields.png"), full_page=True)
    text = dialog.inner_text()
    for label in EXTRA_FIELDS.values():
        assert label in text, f"label {label!r} missing"
    _assert_nothing_prefilled(dialog, "input[name^=element_], input[role=spinbutton]")
    dialog.locator("input[name=element_org_id]").fill(emu.org_id)
    dialog.locator("input[name=element_ingest_url]").fill(emu.ingest_url)
    page.screenshot(path=str(shots / "03-filled-extra-fields.png"), full_page=True)
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections") and r.request.method == "POST"):
        dialog.get_by_role("button", name="Save").click()
    page.get_by_role("row").filter(has_text="m3ter_ui").wait_for()

    stored = deployment.api("GET", "connections/m3ter_ui")
    assert stored["host"] == emu.config_url
    assert stored["port"] is None
    extra = json.loads(stored["extra"])
    # only what was typed; every other field stored empty (the hook's defaults apply)
    assert {k: v for k, v in extra.items() if v is not None} == {
        "org_id": emu.org_id,
        "ingest_url": emu.ingest_url,
    }
    assert set(extra) <= set(EXTRA_FIELDS)
    page.screenshot(path=str(shots / "04-connection-saved.png"))


def test_test_the_connection(page: Any, deployment: Deployment, shots: Path) -> None:
    """Issue 11, item 5: the 3.3.2 Test button's 400, and the documented ways that work."""
    _open_connections(page, deployment)
    broken = _press_test(page, "m3ter_ui")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "05-test-button-bad-request.png"))
    # Airflow 3.3.2 posts port 0 for the hidden Port field (apache/airflow#73298)
    assert broken["sent"]["port"] == 0
    assert broken["status"] == 400
    assert "differs from the stored connection" in broken["body"]["detail"]

    # alternative 1: the CLI
    cli = deployment.airflow("connections", "test", "m3ter_ui", check=False)
    say(f"airflow connections test: {cli.stdout.strip()[-300:]}")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "Connection success!" in cli.stdout

    # alternative 2: a stored port of 0 (the hook ignores it) makes the button itself work
    port_0 = {"connection_id": "m3ter_ui", "conn_type": "m3ter", "port": 0}
    deployment.api("PATCH", "connections/m3ter_ui?update_mask=port", port_0)
    _open_connections(page, deployment)
    working = _press_test(page, "m3ter_ui")
    page.get_by_text("Connected to m3ter organization").first.wait_for()
    page.screenshot(path=str(shots / "06-test-button-with-port-0.png"))
    assert working["status"] == 200
    assert working["body"]["status"] is True, working["body"]
    assert "token issued and meters listed" in working["body"]["message"]

    # the hook refuses a Config/Ingest pair it cannot trust, and the button says why
    emu = deployment.emulator
    deployment.api(
        "POST",
        "connections",
        {
            "connection_id": "m3ter_mixed",
            "conn_type": "m3ter",
            "host": emu.config_url,
            "login": emu.access_key_id,
            "password": deployment.emulator_secret,
            "port": 0,
            "extra": json.dumps({"org_id": emu.org_id, "ingest_url": "https://ingest.m3ter.com"}),
        },
    )
    _open_connections(page, deployment)
    mixed = _press_test(page, "m3ter_mixed")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "07-test-button-mixed-hosts.png"))
    assert mixed["status"] == 200
    assert mixed["body"]["status"] is False
    assert "do not belong together" in mixed["body"]["message"]
    assert deployment.emulator_secret not in json.dumps(mixed["body"])


def _finished_sensor_run(deployment: Deployment) -> str:
    """A successful run of example_m3ter_ingest_events (the deployment test's, or a new one)."""
    done = [r for r in deployment.runs("example_m3ter_ingest_events") if r["state"] == "success"]
    if done:
        return str(done[-1]["dag_run_id"])
    deployment.unpause("example_m3ter_meters")
    meters = deployment.trigger("example_m3ter_meters")
    assert deployment.wait_run("example_m3ter_meters", meters)["state"] == "success"
    deployment.unpause("example_m3ter_ingest_events")
    run_id = deployment.trigger("example_m3ter_ingest_events")
    assert deployment.wait_run("example_m3ter_ingest_events", run_id)["state"] == "success"
    return run_id


def test_follow_a_finished_sensors_m3ter_link(page: Any, deployment: Deployment, shots: Path) -> None:
    """Issue 11, item 6: an emulator connection links to the emulator's own page, not console.m3ter.com."""
    emu = deployment.emulator
    run_id = _finished_sensor_run(deployment)
    page.goto(
        f"{deployment.url}/dags/example_m3ter_ingest_events/runs/{quote(run_id, safe='')}"
        "/tasks/api_calls_meter_ready",
        wait_until="networkidle",
    )
    page.get_by_text("Details", exact=True).click()  # the task page's Details tab
    link = page.get_by_role("link", name="m3ter Console")
    link.wait_for()
    page.screenshot(path=str(shots / "08-sensor-task-extra-link.png"))
    href = link.get_attribute("href") or ""
    assert href.startswith(f"{emu.config_url}/_emulator/console/org/{emu.org_id}/metering/meters/")
    with page.context.expect_page() as opened:
        link.click()
    console = opened.value
    console.wait_for_load_state()
    console.screenshot(path=str(shots / "09-emulator-console-page.png"))
    assert console.url == href
    body = console.inner_text("body")
    assert "m3ter emulator console" in body
    assert emu.org_id in body
    assert '"code": "api_calls"' in console.inner_text("#entity")
    console.close()
    saved = sorted(path.name for path in shots.glob("*.png"))
    assert len(saved) == 9, saved
    assert all(path.stat().st_size > 1000 for path in shots.glob("*.png")), saved
