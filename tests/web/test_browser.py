"""The admin pages in a real browser: headless Chromium, through chromedriver, against
`sessionmeta serve` run as a user runs it, on SQLite and PostgreSQL.

Each page is photographed into ``ci-output/screenshots`` (``SESSIONMETA_SCREENSHOTS``
to change it). Without ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian's
``chromium`` and ``chromium-driver``) the tests skip, or fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, UntypedMeta
from tests.conftest import IN_CI

from .models import Ticket, session_id, ticket

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SESSIONMETA_SCREENSHOTS", ROOT / "ci-output" / "screenshots"))
CHROMIUM = os.environ.get("SESSIONMETA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SESSIONMETA_CHROMEDRIVER", "/usr/bin/chromedriver")
HOSTILE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# SQLite and PostgreSQL: test_pages.py covers MariaDB without a browser.
BACKENDS = ("sqlite", "postgres")


def _missing_browser() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} not found (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ModuleNotFoundError:
        return "selenium is not installed (the dev dependency group)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = _missing_browser()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"browser tests: {problem}", pytrace=False)
        pytest.skip(f"browser tests: {problem}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root, in a container
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """`sessionmeta serve` in a process of its own, on a free port."""

    def __init__(self, url: str, log: Path, *options: str) -> None:
        self.port = _free_port()
        self.log = log
        self.base = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "sessionmeta",
            "serve",
            "--url",
            url,
            "--model",
            "tests.web.models:Ticket",
            "--port",
            str(self.port),
            *options,
        ]
        with log.open("w") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"sessionmeta serve exited: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("sessionmeta serve did not listen within 30 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*options: str) -> Server:
        server = Server(db_url, tmp_path / f"serve-{len(servers)}.log", *options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def ticket_store(engine: AsyncEngine) -> MetadataStore[Ticket]:
    store = MetadataStore(Ticket, engine, create_tables=True)
    await store.create_tables()
    return store


def photograph(driver: Any, backend: str, name: str, *, whole: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = 820
    if whole:
        # The whole page, not the window: the window as tall as the document first.
        document = driver.execute_script("return document.documentElement.scrollHeight")
        height = max(700, min(int(document) + 40, 4000))
    driver.set_window_size(1280, height)
    driver.save_screenshot(str(SCREENSHOTS / f"{backend}-{name}.png"))
    driver.set_window_size(1280, 1000)


def by(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def all_by(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def follow(driver: Any, css: str) -> None:
    """Click what loads a new page, and wait until the browser has left the old one."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = by(driver, "html")
    by(driver, css).click()
    WebDriverWait(driver, 20).until(expected_conditions.staleness_of(old))


def choose(driver: Any, css: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(by(driver, css)).select_by_value(value)


def type_into(driver: Any, css: str, text: str) -> None:
    element = by(driver, css)
    element.clear()
    element.send_keys(text)


async def test_filter_by_owner_and_tag_and_page_to_the_end(
    browser: Any, backend: str, ticket_store: MetadataStore[Ticket], serve: Callable[..., Server]
) -> None:
    count = 10_000
    await ticket_store.set_many({session_id(n): ticket(n) for n in range(count)})
    server = serve()
    browser.get(server.base + "/")
    assert len(all_by(browser, "a.session-link")) == 50
    type_into(browser, 'input[name="v:owner_id"]', "u3")
    type_into(browser, 'input[name="v:tags"]', "billing")
    choose(browser, 'select[name="order"]', "-key:opened_at")
    for column in ("status", "priority"):
        by(browser, f'input[name="c"][value="{column}"]').click()  # hide them
    follow(browser, "#apply")
    photograph(browser, backend, "list")
    # The README's picture (docs/serve.png is the SQLite run's): the window, not the page.
    photograph(browser, backend, "readme", whole=False)
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        seen += [link.text for link in all_by(browser, "a.session-link")]
        following = all_by(browser, "#next-page")
        if not following:
            assert by(browser, "#last-page").text == "last page"
            break
        follow(browser, "#next-page")
        assert pages < 100
    # Newest first, every match once: no repeats, no gaps.
    expected = [session_id(n) for n in reversed(range(count)) if n % 10 == 3 and n % 3 == 0]
    assert seen == expected and len(set(seen)) == len(seen) == 334
    assert pages == 7


async def test_edit_a_title_and_see_an_invalid_value_refused(
    browser: Any, backend: str, ticket_store: MetadataStore[Ticket], serve: Callable[..., Server]
) -> None:
    await ticket_store.set_many({session_id(n): ticket(n) for n in range(5)})
    server = serve()
    browser.get(f"{server.base}/session?id={session_id(1)}")
    photograph(browser, backend, "session")
    follow(browser, "#edit")
    type_into(browser, "#input-title", "Refund approved")
    follow(browser, "#save")
    assert by(browser, "#notice").text == "saved"
    assert (await ticket_store.bind(session_id(1)).get_metadata()).title == "Refund approved"
    assert "Refund approved" in by(browser, "#field-title").text

    follow(browser, "#edit")
    type_into(browser, "#input-title", "Not saved")
    type_into(browser, "#input-priority", "urgent")
    follow(browser, "#save")
    assert "valid integer" in by(browser, "#error-priority").text
    assert "Nothing was saved" in by(browser, "#form-message").text
    assert by(browser, "#input-priority").get_attribute("value") == "urgent"
    photograph(browser, backend, "edit-invalid")
    read = await ticket_store.bind(session_id(1)).get_metadata()
    assert (read.title, read.priority) == ("Refund approved", 1)


async def test_a_version_conflict_from_a_second_tab(
    browser: Any, backend: str, ticket_store: MetadataStore[Ticket], serve: Callable[..., Server]
) -> None:
    await ticket_store.set_many({session_id(n): ticket(n) for n in range(3)})
    server = serve()
    edit = f"{server.base}/session/edit?id={session_id(2)}"
    browser.get(edit)
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    try:
        browser.get(edit)
        type_into(browser, "#input-title", "Renamed in the second tab")
        follow(browser, "#save")
        assert by(browser, "#notice").text == "saved"
        browser.close()
    finally:
        browser.switch_to.window(first)
    type_into(browser, "#input-title", "Renamed in the first tab")
    follow(browser, "#save")
    assert "changed since you opened the form" in by(browser, "#form-message").text
    photograph(browser, backend, "edit-conflict")
    read = await ticket_store.bind(session_id(2)).get_metadata()
    assert read.title == "Renamed in the second tab"
    # The re-shown form keeps the first tab's text; saving it now is a deliberate choice.
    assert by(browser, "#input-title").get_attribute("value") == "Renamed in the first tab"


async def test_a_stored_script_stays_inert(
    browser: Any,
    backend: str,
    engine: AsyncEngine,
    ticket_store: MetadataStore[Ticket],
    serve: Callable[..., Server],
) -> None:
    await ticket_store.bind("xss").set_metadata({"title": HOSTILE, "tags": [HOSTILE]})
    await MetadataStore(UntypedMeta, engine).bind("xss").set_metadata({"note": HOSTILE})
    server = serve()
    for path in ("/?c=title&c=tags", "/session?id=xss", "/session/edit?id=xss"):
        browser.get(server.base + path)
        assert browser.execute_script("return window.__xss === undefined"), path
        assert all_by(browser, "main script") == [] and all_by(browser, "main img") == []
        assert "<script>window.__xss=1</script>" in by(browser, "main").text, path
    photograph(browser, backend, "session-escaped")


async def test_read_only_refuses_a_forged_post(
    browser: Any, backend: str, ticket_store: MetadataStore[Ticket], serve: Callable[..., Server]
) -> None:
    await ticket_store.set_many({session_id(n): ticket(n) for n in range(3)})
    server = serve("--read-only")
    browser.get(f"{server.base}/session?id={session_id(0)}")
    assert by(browser, "#read-only").text == "read-only"
    assert all_by(browser, "#edit") == [] and all_by(browser, "a.delete-key") == []
    photograph(browser, backend, "session-read-only")
    # The page has no form that writes: make one, with the CSRF token of the check page's
    # form, as a hostile script or a hand-made request would, and post it.
    browser.get(f"{server.base}/check")
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = by(browser, "html")
    browser.execute_script(
        """
        const csrf = document.querySelector('input[name=csrf]').value;
        const form = document.createElement('form');
        form.method = 'post';
        form.action = '/session/edit';
        for (const [name, value] of Object.entries({
            csrf: csrf, id: arguments[0], version: '', 'was:title': '', 'v:title': 'Forged'
        })) {
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = name; input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
        """,
        session_id(0),
    )
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(old))
    assert "read-only" in by(browser, "#refusal").text
    assert (await ticket_store.bind(session_id(0)).get_metadata()).title == "Ticket 0"


async def test_the_check_page_and_a_delete_confirmation(
    browser: Any,
    backend: str,
    engine: AsyncEngine,
    ticket_store: MetadataStore[Ticket],
    serve: Callable[..., Server],
) -> None:
    await ticket_store.set_many({session_id(n): ticket(n) for n in range(200)})
    await (
        MetadataStore(UntypedMeta, engine)
        .bind(session_id(7))
        .set_metadata({"priority": "urgent", "legacy_flag": True})
    )
    server = serve()
    browser.get(server.base + "/check")
    follow(browser, "#run-check")
    deadline = time.monotonic() + 30
    while not all_by(browser, "#summary"):
        assert time.monotonic() < deadline, "the check never finished"
        await asyncio.sleep(0.2)
        browser.refresh()
    assert "1 stored value would not read" in by(browser, "#summary").text
    photograph(browser, backend, "check")
    browser.get(f"{server.base}/session?id={session_id(7)}")
    assert "invalid" in by(browser, "#field-priority").text
    follow(browser, "#field-priority a.delete-key")
    photograph(browser, backend, "delete-confirm")
    follow(browser, "#confirm")
    assert by(browser, "#notice").text == "deleted priority"
    stored = await MetadataStore(UntypedMeta, engine).bind(session_id(7)).get_metadata()
    assert "priority" not in stored.model_fields_set
