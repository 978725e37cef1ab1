"""The dashboard as a browser meets it, on the real API process: the login form, the cookie's
flags, the headers, a key never in the URL, and (with Chromium) the run page following a live
run, with a screenshot kept under ``var/``."""

from __future__ import annotations

import re
import shutil
from typing import Any

import httpx
import pytest

from orchestrator.auth import Scope, create_key, revoke_key
from orchestrator.runtime import Runtime
from tests.conftest import ROOT
from tests.e2e.test_api import execute, sse_events
from tests.live import Api

LOGIN_FORM = '<form method="post" action="/dashboard/login"'
ARTIFACTS = ROOT / "var" / "test-artifacts"


def browser_http(api: Api) -> httpx.Client:
    """A client that, like a browser, keeps cookies and sends no Authorization header."""
    return httpx.Client(base_url=api.url, timeout=30)


def login(http: httpx.Client, key: str, target: str = "/dashboard") -> httpx.Response:
    return http.post("/dashboard/login", data={"key": key, "next": target})


def assert_page_headers(response: httpx.Response) -> None:
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce is not None and f'<style nonce="{nonce.group(1)}">' in response.text
    for tag in re.findall(r"<script[^>]*>", response.text):  # no script runs without it
        assert tag == f'<script nonce="{nonce.group(1)}">'
    assert " style=" not in response.text and " onclick=" not in response.text
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def test_no_key_or_a_bad_one_gets_the_login_form(api_server: Api, runtime: Runtime) -> None:
    with browser_http(api_server) as http:
        bare = http.get("/dashboard")
        assert bare.status_code == 401 and LOGIN_FORM in bare.text
        assert_page_headers(bare)

        http.cookies.set("orch_dashboard", "orch_monitor_not-a-key")
        wrong = http.get("/dashboard")
        assert wrong.status_code == 401 and LOGIN_FORM in wrong.text
        assert "unknown, revoked" in wrong.text and "Traceback" not in wrong.text

        http.cookies.clear()
        by_header = api_server.call("GET", "/dashboard", key="client")  # (no JSON error body)
        assert by_header.status_code == 401 and LOGIN_FORM in by_header.text
        client = login(http, api_server.keys["client"])
        assert client.status_code == 401 and "needs a monitor or admin key" in client.text
        assert "set-cookie" not in client.headers
        nonsense = login(http, "<script>alert(1)</script>")
        assert nonsense.status_code == 401 and "<script>alert" not in nonsense.text

    # A key revoked after the login: the next page is the login form again.
    key = create_key(runtime.db, Scope.MONITOR, label="dashboard-revoked")
    with browser_http(api_server) as http:
        assert login(http, key).status_code == 303
        assert http.get("/dashboard").status_code == 200
        revoke_key(runtime.db, key)
        again = http.get("/dashboard")
        assert again.status_code == 401 and LOGIN_FORM in again.text
        assert http.get("/resources").status_code == 401


def test_login_sets_a_strict_httponly_cookie_that_only_reads(api_server: Api) -> None:
    key = api_server.keys["monitor"]
    with browser_http(api_server) as http:
        answer = login(http, key)
        assert answer.status_code == 303 and answer.headers["Location"] == "/dashboard"
        assert key not in answer.headers["Location"]
        cookie = answer.headers["set-cookie"]
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        assert any(flag.startswith("max-age=") for flag in flags)
        assert "secure" not in flags  # plain HTTP here; Secure whenever the request was HTTPS

        page = http.get("/dashboard")
        assert page.status_code == 200 and "<title>Orchestrator dashboard</title>" in page.text
        assert key not in page.text  # the page never holds the key: the cookie does
        assert_page_headers(page)
        assert http.get("/resources").status_code == 200  # the page's own reads
        # The cookie never authorises a write (no CSRF even where SameSite is not enforced).
        write = http.post("/execute", json={"request_id": "csrf", "template_name": "linear5"})
        assert write.status_code == 401

        logout = http.post("/dashboard/logout")
        assert logout.status_code == 303
        assert http.get("/dashboard").status_code == 401


def test_the_key_never_travels_in_the_url_and_the_login_never_redirects_away(
    api_server: Api,
) -> None:
    with browser_http(api_server) as http:
        old = http.get("/dashboard", params={"key": api_server.keys["monitor"]})
        assert old.status_code == 303 and old.headers["Location"] == "/dashboard"
        assert "set-cookie" not in old.headers
        away = login(http, api_server.keys["monitor"], target="//evil.example/")
        assert away.headers["Location"] == "/dashboard"


def test_the_run_page_asks_for_a_key_then_shows_the_run(api_server: Api) -> None:
    run = execute(api_server, "linear5", {"start": 3})["execution_id"]
    assert sse_events(api_server, run)[-1][1]["status"] == "completed"
    with browser_http(api_server) as http:
        form = http.get(f"/dashboard/runs/{run}")
        assert form.status_code == 401
        assert f'name="next" value="/dashboard/runs/{run}"' in form.text
        answer = login(http, api_server.keys["monitor"], target=f"/dashboard/runs/{run}")
        assert answer.headers["Location"] == f"/dashboard/runs/{run}"
        page = http.get(f"/dashboard/runs/{run}")
        assert page.status_code == 200
        assert_page_headers(page)
        body = http.get(f"/executions/{run}").json()  # what the page draws the run from
    assert [s["status"] for s in body["stages"]] == ["completed"] * 5
    assert body["estimate"]["time_ms"]["p50"] > 0
    assert set(body["estimate"]["stages"]) == {s["stage"] for s in body["stages"]}


# -- in a real browser ---------------------------------------------------------------------

#: Records every state the stage boxes show, as the page changes them.
RECORDER = """
window.__states = [];
const snap = () => window.__states.push(
  [...document.querySelectorAll('.stage')].map((b) => b.dataset.stage + '=' + b.dataset.status));
new MutationObserver(snap).observe(document.getElementById('stages'),
  {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
snap();
"""


@pytest.fixture
def chrome() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip(
            "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def test_a_person_signs_in_and_watches_the_stage_boxes_change_during_a_live_run(
    api_server: Api, chrome: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws the boxes on each event: an element found may be gone a moment later.
    wait = WebDriverWait(chrome, 90, ignored_exceptions=(StaleElementReferenceException,))
    chrome.get(f"{api_server.url}/dashboard")
    chrome.find_element(By.NAME, "key").send_keys("not a key")
    chrome.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The form posts and the login page comes back: read its message once it has loaded.
    wait.until(lambda d: "unknown or revoked" in d.find_element(By.ID, "message").text)

    run = execute(api_server, "slow", {"seconds": 2})["execution_id"]
    chrome.get(f"{api_server.url}/dashboard/runs/{run}")  # the form remembers where to go
    wait.until(lambda d: d.find_elements(By.NAME, "key"))
    chrome.find_element(By.NAME, "key").send_keys(api_server.keys["admin"])
    chrome.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".stage")) == 3)
    assert chrome.current_url == f"{api_server.url}/dashboard/runs/{run}"  # no key in it
    chrome.execute_script(RECORDER)

    def finished(driver: Any) -> bool:
        statuses = driver.execute_script(
            "return [...document.querySelectorAll('.stage')].map(b => b.dataset.status)"
        )
        return bool(statuses) and all(status == "completed" for status in statuses)

    wait.until(finished)
    wait.until(lambda d: d.find_element(By.ID, "run-status").text == "completed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-run.png"
    chrome.save_screenshot(str(shot))
    assert shot.stat().st_size > 0

    states: list[list[str]] = chrome.execute_script("return window.__states")
    seen = {entry for snapshot in states for entry in snapshot}
    # What a person saw: boxes that were not completed became completed while they watched.
    assert any(not entry.endswith("=completed") for entry in seen), states
    assert {"one=completed", "two=completed", "three=completed"} <= seen
    assert states[-1] == ["one=completed", "two=completed", "three=completed"]
    names = chrome.execute_script(
        "return [...document.querySelectorAll('.stage .name')].map(n => n.textContent)"
    )
    assert names == ["one", "two", "three"]
    assert "against p50" in chrome.find_element(By.ID, "run-summary").text
    assert not chrome.find_element(By.ID, "overview").is_displayed()  # the run view only
    assert chrome.get_cookie("orch_dashboard")["httpOnly"] is True
    assert chrome.execute_script("return document.cookie") == ""  # no script reads the key
