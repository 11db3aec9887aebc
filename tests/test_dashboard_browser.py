"""The dashboard in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
selenium) against the real local stack: tasks run on the stack's endpoint, one of them failing
with markup in its error; user A signs in and sees the endpoint online, the group's counts and
the error as text; user B's endpoint and task group never reach the page.  On success the test
saves the screenshot of the README (docs/dashboard.png)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from volley import Client, Executor
from volley.config import load_client_config
from volley.errors import TaskExecutionFailed

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
# text that would run, or at least make an element, if the page ever parsed error texts as HTML
MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
WAIT_S = 30


def square(x: int) -> int:
    return x * x


def reject(x: int) -> int:
    raise ValueError(f"input {x} rejected: {MARKUP}")


def _browser_paths() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no headless browser: Debian's chromium and chromium-driver are not installed and "
                    "scripts/setup.sh could not install them (it needs root or passwordless sudo); "
                    "install them with `sudo apt-get install chromium chromium-driver`")
    return chromium, driver


@pytest.fixture()
def browser() -> Iterator[Any]:
    chromium, driver_path = _browser_paths()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: install volley[test]")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # --no-sandbox: Chromium's sandbox cannot start as root (CI containers run tests as root)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1200", "--lang=en-GB"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _second_tenant(stack: dict[str, Any]) -> dict[str, str]:
    """User B: an endpoint and a task group of its own on the same service."""
    from sqlalchemy import create_engine

    from volley.service.auth import create_token
    from volley.service.db import init_db

    engine = create_engine(f"sqlite:///{Path(stack['state_dir']) / 'service' / 'service.db'}")
    try:
        with init_db(engine)() as s:
            _uid, token = create_token(s, f"tenant-b-{uuid.uuid4().hex[:8]}")
    finally:
        engine.dispose()
    client = Client(service_url=stack["service_url"], token=token)
    ep = client.register_endpoint("b-endpoint")["endpoint_id"]
    client.run(3, endpoint_id=ep, function_id=client.register_function(square))  # waits: nothing runs B's endpoint
    return {"endpoint_id": ep, "task_group_id": client.session_task_group_id, "token": token}


def _text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return str(found[0].text) if found else ""


def _wait(driver: Any, check: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(check, f"the dashboard to show {what}")


def test_dashboard_shows_own_endpoint_and_task_group_and_nothing_of_another_tenant(
        stack: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    me = load_client_config()  # user A: the stack's own user, as the SDK finds it
    assert me.token and me.endpoint_id == stack["endpoint_id"]
    other = _second_tenant(stack)

    tg = str(uuid.uuid4())
    with Executor(endpoint_id=stack["endpoint_id"], task_group_id=tg) as ex:
        futures = [ex.submit(square, i) for i in range(4)]
        failing = ex.submit(reject, 7)
        assert [f.result(timeout=60) for f in futures] == [0, 1, 4, 9]
        with pytest.raises(TaskExecutionFailed, match="input 7 rejected"):
            failing.result(timeout=60)

    browser.get(stack["service_url"].rstrip("/") + "/dashboard")  # redirected to /dashboard/
    _wait(browser, lambda d: d.find_element(By.ID, "token").is_displayed(), "the sign-in form")

    # a wrong token is refused with the service's reason, and the form stays
    browser.find_element(By.ID, "token").send_keys("vly_not-a-token")
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    _wait(browser, lambda d: "unknown or revoked token" in _text(d, "#login-error"), "the refusal")

    browser.find_element(By.ID, "token").send_keys(me.token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()

    ep_row = f'#endpoints tr[data-endpoint-id="{stack["endpoint_id"]}"]'
    _wait(browser, lambda d: _text(d, f"{ep_row} .badge") == "online", "the endpoint online")
    row = browser.find_element(By.CSS_SELECTOR, ep_row)
    assert stack["endpoint_id"] in row.text and "ago" in row.text
    assert "/" in row.find_elements(By.TAG_NAME, "td")[4].text  # idle / total workers, as reported

    # the group's row, then its summary (picked by a click: other tests' groups may be newer)
    tg_row = f'#task-groups tr[data-task-group-id="{tg}"]'
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{tg_row} button"), "the task group")
    browser.find_element(By.CSS_SELECTOR, f"{tg_row} button").click()
    _wait(browser, lambda d: _text(d, "#summary-id") == tg, "the task group's summary")
    _wait(browser, lambda d: (_text(d, "#count-done"), _text(d, "#count-failed")) == ("4", "1"),
          "done 4, failed 1")
    assert _text(browser, "#count-waiting") == "0" and _text(browser, "#count-total") == "5"
    assert [td.text for td in browser.find_elements(By.CSS_SELECTOR, f"{tg_row} td")][2:] == ["0", "4", "1", "5"]
    assert browser.find_elements(By.CSS_SELECTOR, "#throughput rect.bar-success")
    assert browser.find_elements(By.CSS_SELECTOR, "#throughput rect.bar-failed")

    # the error text is shown as text: the markup is visible, no element came of it, nothing ran
    error = _text(browser, f'#failures li[data-task-id="{failing.task_id}"] pre')
    assert f"ValueError: input 7 rejected: {MARKUP}" in error
    assert not browser.find_elements(By.CSS_SELECTOR, "#failures img, #failures script")
    assert browser.execute_script("return window.__pwned") is None

    # tenant B's objects never reach the page, and the token never reaches a URL
    dom = browser.page_source
    assert other["endpoint_id"] not in dom and other["task_group_id"] not in dom
    assert me.token not in browser.current_url and me.token not in dom
    assert browser.execute_script("return sessionStorage.getItem('volley-token')") == me.token

    SCREENSHOT.parent.mkdir(exist_ok=True)
    shot = SCREENSHOT.with_suffix(".tmp.png")
    assert browser.save_screenshot(str(shot))
    shot.replace(SCREENSHOT)
