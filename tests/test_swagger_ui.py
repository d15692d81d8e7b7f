"""Swagger UI as a newcomer uses it (issue 13, item 5), in Debian's headless Chromium.

A real ``mailgate serve`` (embedded slapd, free ports, as tests/test_serve.py
starts it) and a real browser driven by Selenium through /usr/bin/chromedriver
(Debian's ``chromium-driver``; Selenium Manager is never asked for a driver):
the page loads with no request outside the gateway's origin, "Authorize"
takes the bare token, and "Try it out" on ``POST /mail/account/`` with an
edited body creates an account that ldapsearch then finds.

Screenshots are kept: in the test's tmp dir and copied to
``$MAILGATE_TEST_ARTEFACTS`` (default: ``<tmp>/mailgate-test-artefacts``);
the test prints where.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.test_serve import Served

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60  # seconds, for any one thing the page must show (2 shared cores: generous)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--ignore-certificate-errors", "--window-size=1280,1600"]


def artefact_dir() -> Path:
    path = Path(os.environ.get("MAILGATE_TEST_ARTEFACTS")
                or Path(tempfile.gettempdir()) / "mailgate-test-artefacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    for program in (CHROMIUM, CHROMEDRIVER):
        assert program.exists(), (f"{program} is missing: deploy/install-system-packages.sh "
                                  "installs chromium and chromium-driver (make test runs it)")
    # The driver's path is given, so Selenium Manager has nothing to look up; and
    # should it run anyway, it stays offline and sends no statistics.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    # Every request the page makes, from Chromium's network log.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER),
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: WebDriver) -> list[str]:
    """The URLs of every request Chromium sent since the last call (its network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def screenshot(driver: WebDriver, path: Path) -> Path:
    """The whole page (not only the window) as PNG, into ``path`` and the artefacts."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",  # type: ignore[attr-defined]
                                  {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))
    kept = artefact_dir() / path.name
    shutil.copyfile(path, kept)
    return kept


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT)


def visible(driver: WebDriver, xpath: str) -> WebElement:
    element: WebElement = wait(driver).until(
        ec.visibility_of_element_located((By.XPATH, xpath)))
    return element


def click(driver: WebDriver, xpath: str) -> WebElement:
    element: WebElement = wait(driver).until(ec.element_to_be_clickable((By.XPATH, xpath)))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()
    return element


def ldap_mail(served: Served, address: str) -> str:
    admin_pw = served.data / "secrets" / "ldap-admin.password"
    found = subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-H", f"ldap://127.0.0.1:{served.ldap_port}",
         "-D", "cn=admin,dc=mail,dc=internal", "-y", str(admin_pw),
         "-b", "ou=domains,dc=mail,dc=internal", f"(mail={address})", "mail", "userPassword"],
        capture_output=True, text=True, timeout=30, check=True)
    return found.stdout


def test_a_newcomer_creates_an_account_in_swagger_ui(
        served: Served, browser: WebDriver, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    served.start()
    token = (served.data / "admin-token").read_text().strip()
    origin = served.url
    driver = browser
    shots: list[Path] = []
    requested_urls(driver)      # forget the start page's requests (chrome://new-tab-page)
    try:
        driver.get(f"{origin}/docs/")
        # The page as it loads: the API's title, the auth hint with its placeholder
        # intact, and the tags.
        info = visible(driver, "//div[contains(@class, 'info')]")
        assert "Bearer TOKEN" in info.text and "Bearer '" not in info.text, info.text
        op = "//div[contains(@class, 'opblock-post')][.//*[@data-path='/mail/account/']]"
        click(driver, "//h3[@data-tag='mail/account']")
        visible(driver, op)

        # Health needs no token: no lock on its operations (the API's have one).
        lock = "//button[contains(@class, 'authorization__btn')]"
        assert driver.find_elements(By.XPATH, f"{op}{lock}")
        click(driver, "//h3[@data-tag='health']")
        for path in ("/healthz", "/readyz"):
            block = f"//div[contains(@class, 'opblock')][.//*[@data-path='{path}']]"
            visible(driver, block)
            assert not driver.find_elements(By.XPATH, f"{block}{lock}"), path

        # "Authorize" with the token as it is in the file: no "Bearer " to add.
        click(driver, "//div[contains(@class, 'scheme-container')]"
                      "//button[contains(@class, 'authorize')]")
        scheme = ("//div[contains(@class, 'auth-container')]"
                  "[.//h4[contains(normalize-space(.), 'token')]]")
        hint = visible(driver, scheme)
        assert "Paste the API token as it is" in hint.text, hint.text
        assert "Bearer TOKEN" in hint.text, hint.text
        visible(driver, f"{scheme}//input").send_keys(token)
        click(driver, f"{scheme}//button[contains(@class, 'authorize')]")
        visible(driver, f"{scheme}//h6[contains(., 'Authorized')]")
        shots.append(screenshot(driver, tmp_path / "swagger-ui-authorize.png"))
        click(driver, "//div[contains(@class, 'modal-ux')]//button[contains(@class, 'btn-done')]")
        wait(driver).until(ec.invisibility_of_element_located(
            (By.XPATH, "//div[contains(@class, 'modal-ux')]")))

        # POST /mail/account/: its summary, then "Try it out" with the example
        # body edited to a new address.
        click(driver, f"{op}//*[contains(@class, 'opblock-summary-path')]")
        summary = visible(driver, f"{op}//*[contains(@class, 'opblock-summary-description')]")
        assert summary.text == "Create an account"
        click(driver, f"{op}//button[contains(@class, 'try-out__btn')]")
        editor = visible(driver, f"{op}//textarea[contains(@class, 'body-param__text')]")
        example = json.loads(editor.get_attribute("value") or "{}")
        assert example["password"] == "correct horse battery staple"
        assert "id" not in example      # read-only: not part of a write
        shown = json.dumps(example)
        assert "example.com" in shown and "skylime" not in shown and "$6$" not in shown
        body = {**example, "name": "newcomer", "spoofing_whitelist": ""}
        editor.send_keys(Keys.CONTROL, "a")     # typing replaces the example
        editor.send_keys(json.dumps(body))
        click(driver, f"{op}//button[contains(@class, 'execute')]")
        live = (f"{op}//table[contains(@class, 'live-responses-table')]"
                "//tr[contains(@class, 'response') and not(contains(@class, 'header'))]")
        status = visible(driver, f"{live}/td[contains(@class, 'response-col_status')]")
        assert status.text.strip() == "201", status.text
        answer = visible(driver, f"{live}/td[contains(@class, 'response-col_description')]"
                                 "//pre")
        created = json.loads(answer.text)
        assert created["id"] == "newcomer@example.com"
        assert created["password"].startswith("$6$")      # the stored form, not the text
        shots.append(screenshot(driver, tmp_path / "swagger-ui-created.png"))
    except (WebDriverException, AssertionError):
        shots.append(screenshot(driver, tmp_path / "swagger-ui-failed.png"))
        raise
    finally:
        with capsys.disabled():
            for shot in shots:
                print(f"\nSwagger UI screenshot: {shot}")

    # Nothing came from anywhere but the gateway (Swagger UI's own assets included).
    urls = requested_urls(driver)
    assert any(url.startswith(f"{origin}/swaggerui/") for url in urls), urls
    outside = [url for url in urls
               if not url.startswith("data:") and not _same_origin(url, origin)]
    assert outside == []

    # The account is in LDAP, with the password hashed, and the API shows it.
    entry = ldap_mail(served, "newcomer@example.com")
    assert "mail: newcomer@example.com" in entry
    assert "userPassword::" in entry or "{CRYPT}$6$" in entry
    shown_by_api = served.get("/mail/account/newcomer@example.com/").json()
    assert shown_by_api["password"].startswith("$6$")
    assert shown_by_api["spoofing_whitelist"] == ""


def _same_origin(url: str, origin: str) -> bool:
    parts, expected = urlsplit(url), urlsplit(origin)
    return (parts.scheme, parts.netloc) == (expected.scheme, expected.netloc)
