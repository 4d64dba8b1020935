"""Headless Debian Chromium driven by Selenium through the system chromedriver (no browser download)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path


def headless_chromium(profile: Path, size: str = "1500,1800"):
    """A Selenium driver of the machine's ``chromium`` with a throw-away ``profile`` folder and no network
    features (updates, sync, background requests)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", f"--window-size={size}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def open_page(browser, url: str, server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Load ``url`` once ``server`` (still running, else its output is shown) answers with the visreps page."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read()
        with contextlib.suppress(WebDriverException):  # the server is not listening yet
            browser.get(url)
            if "visreps" in browser.title:
                return
        time.sleep(0.5)
    raise AssertionError(f"the dashboard did not answer at {url}")
