"""The WebUI against a live test server (real engine): its handler, its error path, and a real
browser (Debian's headless Chromium) that fills the form and finds the ranked table."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from webui import RerankClient

from .conftest import API_KEY, ROOT, wait_until
from .helpers import free_port

pytestmark = pytest.mark.engine
ARTIFACTS = ROOT / "artifacts"


def test_webui_handler_returns_the_ranked_rows(server):
    client = RerankClient(server.url, API_KEY)
    documents = "The capital of China is Beijing.\nGravity is a force.\n\n  北京是中国的首都。  \n"
    rows, message = client.rerank("What is the capital of China?", documents, "", 0)
    assert message.startswith("✅ Ranked 3 documents")
    expected = httpx.post(
        server.url + "/v1/rerank",
        json={"query": "What is the capital of China?", "documents": [d.strip() for d in documents.split("\n") if d]},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()["results"]
    assert [row[1] for row in rows] == [r["index"] for r in expected]
    assert [row[0] for row in rows] == [1, 2, 3]
    assert rows[0][3] == ["The capital of China is Beijing.", "Gravity is a force.", "北京是中国的首都。"][rows[0][1]]
    top, _ = client.rerank("What is the capital of China?", documents, "Find facts about gravity", 1)
    assert len(top) == 1
    assert client.status().startswith("🟢 Ready: model **qwen3-reranker-test**")


def test_webui_quotes_the_winning_passage_of_a_chunked_document(server):
    client = RerankClient(server.url, API_KEY)
    long_document = "Beijing is the capital of China. " + "The river runs past the old mill. " * 400
    documents = f"{long_document}\nGravity is a force."
    rows, message = client.rerank("What is the capital of China?", documents, "", 0, "chunk")
    assert message.startswith("✅ Ranked 2 documents")
    by_index = {row[1]: row for row in rows}
    match = re.fullmatch(r"window (\d+) of (\d+): «(.+)»", by_index[0][4], re.S)
    assert match and int(match[2]) > 1 and 1 <= int(match[1]) <= int(match[2])
    assert match[3].rstrip("…") in long_document
    assert by_index[1][4] == "", "a document of one window has no passage"
    truncated, _ = client.rerank("What is the capital of China?", documents, "", 0, "truncate")
    assert all(row[4] == "" for row in truncated)


def test_webui_shows_the_servers_error_message(server):
    client = RerankClient(server.url, API_KEY)
    rows, message = client.rerank("word " * 600, "a document", "", 0)
    assert rows == [] and "400" in message and "no room for a document" in message
    rows, message = RerankClient(server.url, "wrong-key").rerank("q", "a document")
    assert rows == [] and "401" in message and "API key" in message
    rows, message = RerankClient(f"http://127.0.0.1:{free_port()}").rerank("q", "a document")
    assert rows == [] and "unreachable" in message
    assert RerankClient(server.url, API_KEY).rerank("q", "\n \n")[1].startswith("⚠️")


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
LONG_DOCUMENT = " ".join(
    [f"The old mill stood by the river for {i} years, and the village grew around it." for i in range(60)]
    + ["Beijing is the capital of China, and its centre has been the seat of government for centuries."]
    + [f"Farmers brought their grain to the mill in autumn {i}, and the miller kept a ledger." for i in range(60)]
)


class WebUI:
    """webui.py as a process, and a headless Chromium at 1400x1000 on its page."""

    def __init__(self, server_url: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.port = free_port()
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = open(ARTIFACTS / "webui.log", "w")
        cmd = [sys.executable, str(ROOT / "webui.py"), "--server-url", server_url, "--api-key", API_KEY]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        )
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-quic --no-first-run "
            "--disable-background-networking --disable-component-update --disable-sync --window-size=1400,1000"
        ).split():
            options.add_argument(flag)
        self.driver = None
        try:
            assert wait_until(lambda: _up(f"http://127.0.0.1:{self.port}/"), 180, 0.5), Path(self.log.name).read_text()
            self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
            self.open()
        except BaseException:
            self.close()
            raise

    def open(self) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(f"http://127.0.0.1:{self.port}/")
        WebDriverWait(self.driver, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, "textarea")))

    def text(self, css: str = "body") -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def wait_for(self, predicate, timeout: float = 60):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(lambda d: predicate())

    def rerank(self, query: str, documents: str, strategy: str = "truncate") -> None:
        from selenium.webdriver.common.by import By

        query_box, documents_box = self.driver.find_elements(By.CSS_SELECTOR, "textarea")[:2]
        query_box.send_keys(query)
        self.driver.execute_script(  # a long text is set at once (send_keys would type it key by key)
            "const [el, value] = arguments;"
            "Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set.call(el, value);"
            "el.dispatchEvent(new Event('input', {bubbles: true}));",
            documents_box,
            documents,
        )
        if strategy != "truncate":
            self.driver.find_element(By.XPATH, f"//label[normalize-space()='{strategy}']").click()
        self.driver.find_element(By.XPATH, "//button[normalize-space()='Rerank']").click()

    def close(self) -> None:
        if self.driver is not None:
            self.driver.quit()
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


@pytest.fixture(scope="module")
def webui_on_server(server) -> Iterator[WebUI]:
    """One WebUI (its process and a browser) for the tests on the session's server; each reloads it."""
    ui = WebUI(server.url)
    yield ui
    ui.close()


@pytest.mark.browser
@needs_browser
def test_browser_fills_the_form_and_sees_the_ranking(webui_on_server):
    ui = webui_on_server
    ui.open()
    if True:
        ui.wait_for(lambda: "Ready: model" in ui.text())
        ui.rerank(
            "What is the capital of China?", "Gravity is a force.\nThe capital of China is Beijing.\n北京是中国的首都。"
        )
        ui.wait_for(lambda: "Ranked 3 documents" in ui.text())
        table = ui.text("#ranking")
        assert "The capital of China is Beijing." in table and "北京是中国的首都。" in table


# For each of the first three header cells: does its word sit on one line (not squeezed to
# "ra / nk")? For the best passage's cell: its box on the page, to compare with the viewport.
HEADERS_ON_ONE_LINE = """
const cells = [...document.querySelectorAll('#ranking thead th')].slice(0, 3);
return cells.map(th => {
  const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
  let node, lines = 0, text = '';
  while ((node = walker.nextNode())) {
    if (!node.textContent.trim()) continue;
    const range = document.createRange(); range.selectNodeContents(node);
    const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
    lines += tops.size; text += node.textContent.trim();
  }
  return [text, lines];
});
"""
FIND_CELL = """
const inside = [...document.querySelectorAll('#ranking *')].filter(e => (e.innerText || '').includes(arguments[0]));
const deepest = inside.filter(e => !inside.some(o => o !== e && e.contains(o)));
const cell = deepest.length ? (deepest[0].closest('td, [role=gridcell]') || deepest[0]) : null;
"""
CELL_WITH = FIND_CELL + "return cell;"
BOX_OF_CELL_WITH = (
    FIND_CELL
    + """
if (!cell) return null;
const r = cell.getBoundingClientRect();
return [r.left, r.top, r.right, r.bottom, window.innerWidth, window.innerHeight];
"""
)


@pytest.mark.browser
@needs_browser
def test_browser_long_document_under_chunk_is_readable_and_opens_whole(webui_on_server):
    """The WebUI with a long document beside two short ones, strategy chunk, at 1400x1000."""
    from selenium.webdriver.common.by import By

    body = {"query": "What is the capital of China?", "documents": [LONG_DOCUMENT, "Gravity is a force.", "Paris."]}
    ui = webui_on_server
    ui.open()  # a fresh page: nothing left from the test before
    ui.rerank(body["query"], "\n".join(body["documents"]), "chunk")
    ui.wait_for(lambda: "Ranked 3 documents" in ui.text())
    ui.driver.save_screenshot(str(ARTIFACTS / "webui.png"))
    table = ui.text("#ranking")
    assert f"({len(LONG_DOCUMENT):,} characters)" in table, table[:2000]
    assert len(table) < len(LONG_DOCUMENT) / 3, table  # the document is shortened, not printed whole
    headers = ui.driver.execute_script(HEADERS_ON_ONE_LINE)
    assert [re.sub(r"[^\w ]", "", h[0]) for h in headers] == ["rank", "index", "score"], headers  # (and ⋮)
    assert all(lines == 1 for _, lines in headers), headers
    [label] = re.findall(r"window \d+ of \d+", table)  # the long document's best window (here a few)
    box = ui.driver.execute_script(BOX_OF_CELL_WITH, label)
    assert box is not None, table[:2000]
    left, top, right, bottom, width, height = box
    assert 0 <= left < right <= width and 0 <= top < height, box  # in view, no scrolling

    cell = ui.driver.execute_script(CELL_WITH, label)
    cell.click()
    ui.wait_for(lambda: ui.driver.find_elements(By.CSS_SELECTOR, "#document-view mark.best-passage"))
    view = ui.driver.find_element(By.CSS_SELECTOR, "#document-view")
    marked = ui.driver.find_element(By.CSS_SELECTOR, "#document-view mark.best-passage")
    marked_text = ui.driver.execute_script("return arguments[0].textContent", marked)
    whole = ui.driver.execute_script("return arguments[0].querySelector('.document').textContent", view)
    assert whole == LONG_DOCUMENT
    [(start, end)] = re.findall(r"characters ([\d,]+)-([\d,]+)", view.text)
    start, end = int(start.replace(",", "")), int(end.replace(",", ""))
    assert marked_text == LONG_DOCUMENT[start:end] and len(marked_text) > 100  # the offsets the page states
    assert label in view.text
    ui.driver.execute_script("arguments[0].scrollIntoView()", marked)
    ui.driver.save_screenshot(str(ARTIFACTS / "webui-document.png"))


@pytest.mark.browser
@needs_browser
def test_browser_status_line_turns_ready_when_the_server_comes_up(live_server):
    port = free_port()
    ui = WebUI(f"http://127.0.0.1:{port}")  # nothing listens there yet
    try:
        ui.wait_for(lambda: "unreachable" in ui.text("#status"))
        live_server(port=port)
        ui.wait_for(lambda: "Ready: model" in ui.text("#status"), timeout=60)  # the timer, no click
        ui.open()  # a reload asks anew
        ui.wait_for(lambda: "Ready: model" in ui.text("#status"))
    finally:
        ui.close()


@pytest.mark.browser
@needs_browser
def test_browser_picks_the_model_that_answers(live_server, tiny_model):
    """With several models the page lists them (the default first) and the one picked answers."""
    from selenium.webdriver.common.by import By

    two = live_server(model=[str(tiny_model)] * 2, served_model_name=["small", "large"])
    ui = WebUI(two.url)
    try:
        ui.wait_for(lambda: "Ready: model" in ui.text("#status"))
        ui.rerank("What is the capital of China?", "Gravity is a force.\nThe capital of China is Beijing.")
        ui.wait_for(lambda: "Ranked 2 documents with small" in ui.text())  # the default, preselected
        ui.driver.find_element(By.CSS_SELECTOR, "#model input").click()
        option = "#model li[role=option][aria-label=large]"
        ui.wait_for(lambda: ui.driver.find_elements(By.CSS_SELECTOR, option))
        ui.driver.find_element(By.CSS_SELECTOR, option).click()
        ui.driver.find_element(By.XPATH, "//button[normalize-space()='Rerank']").click()
        ui.wait_for(lambda: "Ranked 2 documents with large" in ui.text())
        ui.driver.save_screenshot(str(ARTIFACTS / "webui-models.png"))
    finally:
        ui.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
