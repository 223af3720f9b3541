"""The page in a real browser: Debian's headless Chromium, driven by Playwright, against serve.py
on 127.0.0.1 with the shipped model. Upload a real IdenProf photo; five bars, the heat map, another class's heat map on
a click, phone width, and not one request to any other host. Screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from archive_subsets import REPO_ROOT
from playwright.sync_api import sync_playwright
from serve_helpers import SHIPPED_MODEL, running_server
from test_export import one_test_image_per_class

from idenprof.predict.classifier import load

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO_ROOT / "test-artifacts"
PHOTO_CLASS = "firefighter"


@pytest.fixture(scope="module")
def model_path() -> Path:
    if not SHIPPED_MODEL.is_file():
        pytest.fail(f"needs the shipped model at {SHIPPED_MODEL} (or IDENPROF_TEST_MODEL)")
    return SHIPPED_MODEL


@pytest.fixture(scope="module")
def photo_and_class(model_path, small_dataset) -> tuple[Path, str]:
    """A real firefighter test photo the model recognises: the one it is surest of."""
    classifier = load(model_path)
    candidates = sorted((small_dataset / "test" / PHOTO_CLASS).glob("*.jpg"))
    photo = max(candidates, key=lambda p: dict(classifier.predict(p, top=99))[PHOTO_CLASS])
    assert classifier.predict(photo)[0][0] == PHOTO_CLASS, "the model misses every photo"
    return photo, PHOTO_CLASS


@pytest.fixture(scope="module")
def server(model_path):
    with running_server("--model", str(model_path)) as (url, process):
        yield url


@contextlib.contextmanager
def page_at(url: str, width: int = 1000, height: int = 900):
    """A Chromium page of `width` x `height` showing `url`, for a test's own browser."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_a_photo_gets_five_bars_and_heat_maps_with_no_outside_request(browser, server,
                                                                      photo_and_class):
    photo, expected_class = photo_and_class
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server)
    page.set_input_files("#files", str(photo))
    bars = page.locator(".card .bar")
    bars.nth(4).wait_for(timeout=60_000)
    assert bars.count() == 5
    labels = page.locator(".card .bar .label").all_inner_texts()
    assert labels[0] == expected_class
    percents = [float(text.strip("<%")) for text in page.locator(".card .percent").all_inner_texts()]
    assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.5

    heatmap = page.locator(".card img.heatmap")
    page.wait_for_function(
        "() => { const img = document.querySelector('.card img.heatmap');"
        " return img.complete && img.naturalWidth > 0 && img.src.startsWith('data:image/png'); }")
    assert heatmap.get_attribute("alt") == f"heat map for {expected_class}"
    assert bars.nth(0).get_attribute("aria-pressed") == "true"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
    page.screenshot(path=str(REPO_ROOT / "docs" / "screenshot.png"))  # the README's

    other = labels[2]
    bars.nth(2).click()
    page.wait_for_function(
        f"() => document.querySelector('.card img.heatmap').alt === 'heat map for {other}'")
    assert bars.nth(2).get_attribute("aria-pressed") == "true"
    assert bars.nth(0).get_attribute("aria-pressed") == "false"

    assert requested and all(
        url.startswith(server) or url.startswith(("data:", "blob:")) for url in requested
    ), [url for url in requested if not url.startswith(server)]
    page.close()


def test_at_phone_width_nothing_overflows_and_several_photos_each_get_a_card(
        browser, server, small_dataset):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(server)
    photos = one_test_image_per_class(small_dataset)[:2]
    page.set_input_files("#files", [str(p) for p in photos])
    page.locator(".card").nth(1).locator(".bar").nth(4).wait_for(timeout=60_000)
    assert page.locator(".card").count() == 2
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)
    page.close()
