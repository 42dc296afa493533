"""End to end: `streamlit run dashboards/app.py` on a free loopback port over the seeded
database, opened in headless Chromium; the overview and an audit page must render. Their
screenshots are kept under tests/artifacts/ (gitignored) for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from auditor.cli.dashboard import APP, streamlit_command

from .conftest import _free_port, _stop

if TYPE_CHECKING:
    from .dashboard_seed import SeededStore

pytest_plugins = ["tests.dashboard_seed"]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
START_TIMEOUT_S = 120
RENDER_TIMEOUT_S = 180
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2200",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="LOUD SKIP: headless Chromium missing; `make test` installs the Debian packages "
        "chromium and chromium-driver (as root)",
    ),
]


@pytest.fixture(scope="module")
def dashboard_url(
    seeded_store: SeededStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The app served by `streamlit run` (as `auditor dashboard` starts it) on 127.0.0.1."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "AUDITOR_DB_URL": seeded_store.url}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            streamlit_command(APP, "127.0.0.1", port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"{url}/_stcore/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail(f"streamlit did not start:\n{log_path.read_text()[-4000:]}")
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def render(browser, url: str, *texts: str) -> str:
    """Open `url` and wait until the page shows every one of `texts` and Streamlit has
    finished running it; returns the page's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(driver) -> str | None:
        body = driver.find_element(By.TAG_NAME, "body").text
        running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        return body if all(t in body for t in texts) and not running else None

    browser.get(url)
    return WebDriverWait(browser, RENDER_TIMEOUT_S, poll_frequency=0.5).until(ready)


def screenshot(browser, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(1)  # charts draw after the text
    path = ARTIFACTS / name
    browser.save_screenshot(str(path))
    return path


def test_overview_and_audit_pages_render(browser, dashboard_url: str, seeded_store: SeededStore):
    body = render(
        browser, dashboard_url, "Overview", "counterfeit-detector", "open findings", "Newest audits"
    )
    assert "Open access" in body  # no login configured: the banner says so
    assert screenshot(browser, "dashboard-overview.png").stat().st_size > 10_000

    audit = f"{dashboard_url}/audit?audit={seeded_store.shortcut_audit}"
    body = render(
        browser, audit, "most relevant channels of layer3", "top samples by activation", "Probes"
    )
    assert "Open access" in body
    assert "Traceback" not in body
    assert screenshot(browser, "dashboard-audit.png").stat().st_size > 10_000


def test_html_report_opens_offline_with_findings_galleries_and_reviews(
    browser, seeded_store: SeededStore, tmp_path
):
    from selenium.webdriver.common.by import By

    from auditor.store import AuditStore

    store = AuditStore(seeded_store.url)
    findings = store.findings(seeded_store.shortcut_audit)
    store.add_review(findings[0].id, "confirmed", "dr-rossi", "tint visible on every fake")
    store.close()
    page = tmp_path / "shared" / "audit.html"
    auditor_cli = str(Path(sys.executable).with_name("auditor"))
    done = subprocess.run(
        [auditor_cli, "report", "--audit", str(seeded_store.shortcut_audit), "--html", str(page),
         "--db", seeded_store.url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    remote = r"(?:src|href)\s*=\s*['\"]?(?:https?:)?//|url\(\s*['\"]?(?:https?:)?//"
    fetched = re.findall(remote, page.read_text())
    assert not fetched  # nothing fetched from the network (the SVG namespace is only a name)

    browser.get(page.as_uri())
    body = browser.find_element(By.TAG_NAME, "body").text
    assert f"Relevance audit {seeded_store.shortcut_audit}" in body
    for finding in findings:
        assert finding.title in body
    assert "confirmed by dr-rossi: tint visible on every fake" in body
    assert "not reviewed yet" in body  # the other findings
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    assert browser.find_elements(By.CSS_SELECTOR, "svg rect")  # evidence charts drawn
    shot = screenshot(browser, "html-report.png")
    from PIL import Image, ImageStat

    pixels = Image.open(shot).convert("L")
    assert ImageStat.Stat(pixels).stddev[0] > 20  # not a blank page
