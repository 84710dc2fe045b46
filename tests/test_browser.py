"""The chat in a real browser: `streamlit run app.py` on a loopback port, driven in Debian's Chromium.

Screenshots of each step are saved in the test's temporary folder (printed on failure).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT, free_port

from rag.embedding import embedders
from rag.ingest import ingest
from rag.settings import load_settings
from rag.store import Store

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-store")
    settings = load_settings(data_dir=data)
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS], settings, store)
    store.close()
    port = free_port()
    env = {**os.environ, "RAG_DATA_DIR": str(data)}
    process = subprocess.Popen([sys.executable, "-m", "rag", "serve", "--port", str(port), "--address", "127.0.0.1"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def page(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        tab = browser.new_page(viewport={"width": 1300, "height": 1100})
        tab.shots = tmp_path
        yield tab
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(page.shots / f"{name}.png"), full_page=True)


def last_answer(page):
    return page.locator('[data-testid="stChatMessage"]').last


def test_sample_question_answer_and_highlighted_source(page, server):
    page.goto(server)
    sample = page.get_by_role("button", name="How many industrial datasets are to be built by 2027?")
    sample.wait_for(timeout=60_000)
    started = time.monotonic()  # the page has loaded
    sample.click()
    page.locator("sup", has_text="[1]").first.wait_for(timeout=60_000)
    first_answer_s = time.monotonic() - started
    shot(page, "1-answer")
    assert "100 high" in last_answer(page).inner_text()
    page.get_by_text("Sources (").first.click()
    mark = page.locator("mark").first
    mark.wait_for(timeout=10_000)
    assert "100 high" in mark.inner_text()
    shot(page, "2-source-highlighted")
    print(f"first answer {first_answer_s:.1f} s after page load")
    # A question that stands on its own is asked as it is, whatever came before it.
    box = page.get_by_placeholder("Ask a question about the documents")
    box.fill("What must SMEs do?")
    box.press("Enter")
    # Streamlit keeps the previous run's elements on screen until it replaces them: wait for the fourth message
    # (the new answer) to hold an answer of its own.
    first = page.locator('[data-testid="stChatMessage"] .answer').first.inner_text()
    page.wait_for_function(
        """first => {
        const answers = [...document.querySelectorAll('[data-testid="stChatMessage"]')]
            .map(m => m.querySelector('.answer'));
        return answers.length >= 4 && answers[3] && answers[3].innerText.trim() && answers[3].innerText !== first;
    }""",
        arg=first,
        timeout=60_000,
    )
    follow_up = page.locator('[data-testid="stChatMessage"]').nth(3).locator(".answer").inner_text()
    shot(page, "2b-standalone-follow-up")
    assert "datasets" not in follow_up
    assert re.search(r"SMEs|[Ss]mall and [Mm]edium", follow_up)


def test_upload_then_ask_about_it_and_hostile_markup_stays_text(page, server, tmp_path):
    document = tmp_path / "robot-pilots.md"
    document.write_text(
        "# Robot pilot zones\n\nThe pilot programme designates 37 robot pilot zones in Hefei. "
        "<script>window.__xss = 1</script> <img src=x onerror=\"window.__xss = 2\"> is shown as text.\n",
        encoding="utf-8")
    page.goto(server)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(document))
    page.get_by_role("button", name="Ingest").click()
    page.get_by_text("Added: robot-pilots.md").wait_for(timeout=120_000)
    shot(page, "3-uploaded")
    assert page.get_by_text("Ask about 3 stored documents").is_visible()  # the sidebar table is a canvas
    box = page.get_by_placeholder("Ask a question about the documents")
    box.fill("How many robot pilot zones are designated in Hefei?")
    box.press("Enter")
    page.locator("sup", has_text="[1]").last.wait_for(timeout=60_000)
    assert "37 robot pilot zones" in last_answer(page).inner_text()
    page.get_by_text("Sources (").last.click()
    page.locator("mark", has_text="37 robot pilot zones").first.wait_for(timeout=10_000)
    source_text = last_answer(page).inner_text()
    assert "<script>window.__xss = 1</script>" in source_text
    assert "<img src=x onerror=" in source_text
    assert page.evaluate("window.__xss === undefined")
    shot(page, "4-uploaded-document-cited-markup-as-text")
