"""The WebUI against a live test server (real engine): its handler, its error path, and a real
browser (Debian's headless Chromium) that fills the form and finds the ranked table."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from webui import RerankClient

from .conftest import API_KEY, ROOT, wait_until
from .test_process import free_port

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


@pytest.mark.browser
@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
def test_browser_fills_the_form_and_sees_the_ranking(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "webui.log", "w")  # noqa: SIM115
    webui = subprocess.Popen(
        [sys.executable, str(ROOT / "webui.py"), "--server-url", server.url, "--api-key", API_KEY, "--port", str(port)],
        stdout=log,
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
    driver = None
    try:
        assert wait_until(lambda: _up(f"http://127.0.0.1:{port}/"), 180, 0.5), Path(log.name).read_text()
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "textarea")))
        assert "Ready: model" in driver.find_element(By.TAG_NAME, "body").text
        query, documents = driver.find_elements(By.CSS_SELECTOR, "textarea")[:2]
        query.send_keys("What is the capital of China?")
        documents.send_keys("Gravity is a force.\nThe capital of China is Beijing.\n北京是中国的首都。")
        driver.find_element(By.XPATH, "//button[normalize-space()='Rerank']").click()
        wait.until(lambda d: "Ranked 3 documents" in d.find_element(By.TAG_NAME, "body").text)
        table = driver.find_element(By.ID, "ranking").text
        assert "The capital of China is Beijing." in table and "北京是中国的首都。" in table
        driver.save_screenshot(str(ARTIFACTS / "webui.png"))
        assert (ARTIFACTS / "webui.png").stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        webui.terminate()
        webui.wait(20)
        log.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
