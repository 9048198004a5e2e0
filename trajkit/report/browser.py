"""Open a report in a real headless Chromium (selenium, a dev dependency) and say how it rendered.

>>> check = open_in_chromium("report/index.html", screenshot="report.png")     # doctest: +SKIP
>>> check.broken_images, check.console_errors, check.sections                   # doctest: +SKIP

Chromium and its driver are the distribution's (Debian: ``apt-get install chromium chromium-driver``, at
:data:`CHROMIUM` and :data:`CHROMEDRIVER`); selenium is given both paths, so it never downloads a browser.
:func:`missing` says what is not installed (tests skip with that reason).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("TRAJKIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TRAJKIT_CHROMEDRIVER", "/usr/bin/chromedriver")

_IMAGES = """return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"""


@dataclass
class PageCheck:
    """How a page rendered: ``url``, ``title``, ``images`` (``[src, naturalWidth]``), ``broken_images``
    (``src`` of those with ``naturalWidth == 0``), ``console_errors`` (SEVERE browser log entries),
    ``sections`` (ids of the ``section.analysis`` elements), ``failures`` (text of ``.failure`` boxes)."""

    url: str
    title: str
    images: list[tuple[str, int]]
    broken_images: list[str]
    console_errors: list[str]
    sections: list[str]
    failures: list[str]


def missing() -> str | None:
    """Why :func:`open_in_chromium` cannot run here (naming what to install), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'trajkit[dev]')"
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() or shutil.which(p))]
    if absent:
        return (f"{', '.join(absent)} not found: install the apt packages chromium and chromium-driver "
                "(apt-get install chromium chromium-driver)")
    return None


def open_in_chromium(index: str | os.PathLike, screenshot: str | os.PathLike | None = None,
                     width: int = 1280, height: int = 1600) -> PageCheck:
    """Load ``index`` from ``file://`` in headless Chromium, collect what :class:`PageCheck` lists, and write
    a PNG ``screenshot`` of the top ``width × height`` window when asked."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        url = Path(index).resolve().as_uri()
        driver.set_page_load_timeout(60)
        driver.get(url)
        images: list[Any] = driver.execute_script(_IMAGES)
        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        sections = [el.get_attribute("id") for el in driver.find_elements(By.CSS_SELECTOR, "section.analysis")]
        failures = [el.text for el in driver.find_elements(By.CSS_SELECTOR, ".failure")]
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
        return PageCheck(url, driver.title, [(src, int(w)) for src, _, w in images],
                         [src for src, done, w in images if not done or int(w) == 0], errors, sections, failures)
    finally:
        driver.quit()
