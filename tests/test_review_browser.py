"""The review page in a real browser: Debian's chromium, headless, driven through its
chromedriver by selenium. A reviewer corrects one request with the form built from the registry
and finds the correction in the export."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
webdriver = pytest.importorskip("selenium.webdriver")
httpx = pytest.importorskip("httpx")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from intentkit import Router  # noqa: E402
from intentkit.feedback import RequestLog  # noqa: E402
from intentkit.server import create_app  # noqa: E402
from intentkit.testing import FakeBackend  # noqa: E402

TOKEN = "review-token"
SCRIPT = {"北京明天天气怎么样": "play_music()", "我想听音乐": "play_music()", "讲个笑话": "no_intent()"}


def make_router() -> Router:
    router = Router(FakeBackend(lambda r: SCRIPT.get(r.text, "no_intent()"), confidence=0.4), fast_path=False)

    @router.intent
    def play_music() -> str:
        return "playing"

    @router.intent
    def weather_search(city: str, days: int = 1, unit: str = "c") -> str:
        return city

    return router


@pytest.fixture
def browser(chromium: tuple[str, str]) -> Iterator[object]:
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="intentkit-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def test_a_reviewer_corrects_a_request_and_finds_it_in_the_export(browser, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = RequestLog(f"sqlite:///{tmp_path / 'review.db'}", flush_interval_s=0.02)
    with live_server(create_app(make_router(), token=TOKEN, log=log)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            wrong = client.post("/v1/route", json={"text": "北京明天天气怎么样"}).json()["request_id"]
            client.post("/v1/route", json={"text": "讲个笑话"})
        browser.get(f"{url}/review?token={TOKEN}")
        wait = WebDriverWait(browser, 15)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1")
        item = browser.find_element(By.CSS_SELECTOR, f'article[data-request-id="{wrong}"]')
        assert item.find_element(By.CLASS_NAME, "answer").text == "play_music()"
        assert "confidence 0.400" in item.text
        item.find_element(By.CLASS_NAME, "edit").click()
        Select(item.find_element(By.CSS_SELECTOR, "select.intent")).select_by_value("weather_search")
        item.find_element(By.NAME, "city").send_keys("北京")
        days = item.find_element(By.NAME, "days")
        days.send_keys("2.5")  # not a whole number: the form says so and sends nothing
        item.find_element(By.CLASS_NAME, "save").click()
        wait.until(lambda b: "whole number" in item.find_element(By.CLASS_NAME, "item-error").text)
        days.clear()
        days.send_keys("2")
        item.find_element(By.CLASS_NAME, "save").click()
        wait.until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, f'article[data-request-id="{wrong}"] .state'), "saved"
            )
        )
        assert 'weather_search(city="北京", days=2)' in item.find_element(By.CLASS_NAME, "state").text
        # the other one: out of scope, confirmed with one click
        other = browser.find_elements(By.CSS_SELECTOR, "article.item:not(.done)")[0]
        other.find_element(By.CLASS_NAME, "oos").click()
        wait.until(lambda b: "saved" in other.find_element(By.CLASS_NAME, "state").text)
        href = browser.find_element(By.ID, "export").get_attribute("href")
        # what the export link downloads, fetched by the page with its own credentials (its cookie)
        text = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done);",
            href,
        )
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    log.close()
    by_text = {row["instruction"]: row for row in rows}
    assert by_text["北京明天天气怎么样"]["output"] == 'weather_search(city="北京", days=2, unit="c")'
    assert by_text["北京明天天气怎么样"]["request_id"] == wrong
    assert by_text["讲个笑话"]["output"] is None
