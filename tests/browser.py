"""Headless Chromium for tests where a page is the product (the report, the MLflow UI).

Debian's `chromium` and `chromium-driver` (.ci/run installs them when missing), driven by Selenium
pointed at the system binaries: no browser download, no network. Screenshots go to
$MIXTUNE_TEST_ARTIFACTS (default test-artifacts/ in the checkout), kept after the run.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shots_dir(name: str) -> Path:
    out = Path(os.environ.get("MIXTUNE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / name
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium session; skipped where Debian's chromium is not installed, unless
    MIXTUNE_REQUIRE_BROWSER is set (as .ci/run does), where that is a failure."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)"
        if os.environ.get("MIXTUNE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def page_text(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "body").text


def wait_for_text(browser, text: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while True:
        body = page_text(browser)
        if text in body:
            return body
        assert time.time() < deadline, f"{text!r} did not appear in {browser.current_url} within {timeout:.0f} s:\n{body[:2000]}"
        time.sleep(0.5)


def click_text(browser, text: str, timeout: float = 60) -> None:
    """Click the innermost element whose own text is exactly `text` (a tree node, a tab)."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    while True:
        found = browser.find_elements(By.XPATH, f"//*[normalize-space(text())='{text}']")
        if found:
            found[-1].click()
            return
        assert time.time() < deadline, f"nothing to click named {text!r} in {browser.current_url}:\n{page_text(browser)[:2000]}"
        time.sleep(0.5)


def images_loaded(browser) -> list[bool]:
    """For each <img> on the page: did it load (complete, with a natural width)?"""
    return browser.execute_script(
        "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0);")
