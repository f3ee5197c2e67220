"""The chat UI in a real browser (Playwright driving Debian's chromium).

Needs the `chromium` Debian package (/usr/bin/chromium); Playwright's own browser downloads are
never used. Screenshots go to test-output/ (set UPDATE_DOCS_SCREENSHOT=1 to also refresh
docs/screenshot.png).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.ui_support import (
    ROOT,
    SEEDS,
    TEST_OUTPUT,
    closed_port_url,
    free_port,
    seed_index_copy,
    start_app,
)

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium: apt-get install -y chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
expect = sync_api.expect

QUESTION = "What weapons did North Korea allegedly send to Russia?"
TIMEOUT = 90_000  # ms; two shared cores, a cold embedder
# Every assertion waits for the state it expects, up to TIMEOUT: page.set_default_timeout does
# not reach `expect`, whose own default (5 s) failed on a busy machine (issue 10, finding 7).
expect.set_options(timeout=TIMEOUT)
XSS_ARTICLE = (
    "Фестивалот Зорблат во Квенби\n"
    "\n"
    "Фестивалот Зорблат во градот Квенби собра дванаесет илјади посетители оваа година.\n"
    "Организаторите објавија код <script>alert(1)</script> и слика "
    "<img src=x onerror=alert(2)> на официјалната страница на фестивалот Зорблат.\n"
    "Следниот фестивал Зорблат ќе се одржи во Квенби во јуни.\n"
)
XSS_QUESTION = "Колку посетители собра фестивалот Зорблат во Квенби?"
UPLOAD_ARTICLE = (
    "Vulkan Trelbor ponovo aktivan\n"
    "\n"
    "Vulkan Trelbor na ostrvu Meskal ponovo je izbacio pepeo u sredu, saopštili su vulkanolozi.\n"
    "Stanovnici sela Ardu evakuisani su kao mera predostrožnosti.\n"
)


def _browser_args() -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=_browser_args())
        yield b
        b.close()


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory):
    """The default offline setup: mode auto, no Ollama running, so answers are extractive.
    The index holds the seeds plus an article full of HTML payloads."""
    from rag.pipeline import build_pipeline
    from rag.settings import load_settings

    index = seed_index_copy(tmp_path_factory, "ui-browser-offline")
    xss = tmp_path_factory.mktemp("xss") / "zorblat_xss.txt"
    xss.write_text(XSS_ARTICLE, encoding="utf-8")
    settings = load_settings(index_dir=index, data_dir=SEEDS, mode="auto",
                             ollama_url=closed_port_url(), port=free_port(),
                             max_upload_bytes=20_000)
    pipeline = build_pipeline(settings)
    assert pipeline.index(xss).indexed == 1
    demo, url = start_app(pipeline, settings)
    yield url
    demo.close()


def _keyed_model(replies: dict):
    """A ScriptedChatModel whose reply is chosen by a keyword of the question, so the tests
    do not depend on the order they run in."""
    from rag.llm.backends import ScriptedChatModel

    class Keyed(ScriptedChatModel):
        def stream(self, messages):
            last = messages[-1]["content"]
            self.replies = [next(r for k, r in replies.items() if k in last)]
            self._next = 0
            return super().stream(messages)

    return Keyed(list(replies.values()), chunk_size=3, delay=0.1)


@pytest.fixture(scope="module")
def scripted_app(tmp_path_factory):
    """Generate mode with a scripted LLM that streams slowly, so partial text is visible."""
    from rag.pipeline import build_pipeline
    from rag.settings import load_settings
    from rag.types import RagError

    index = seed_index_copy(tmp_path_factory, "ui-browser-scripted")
    settings = load_settings(index_dir=index, data_dir=SEEDS, mode="generate", port=free_port())
    model = _keyed_model({
        "weapons": "North Korea allegedly sent artillery shells and ballistic missiles to "
                   "Russia [1]. Nearly five million shells were sent, according to South "
                   "Korea [2].",
        "shells": ("North Korea sent", RagError("The LLM server stopped answering: restart it "
                                                "with `ollama serve`.")),
        "World Cup": "The articles don't say.",
    })
    demo, url = start_app(build_pipeline(settings, chat_model=model), settings)
    yield url
    demo.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 960})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT)
    pg.dialogs = []  # every alert()/confirm() that fires: must stay empty
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    ctx.close()


def _shot(pg, name: str) -> Path:
    TEST_OUTPUT.mkdir(exist_ok=True)
    path = TEST_OUTPUT / name
    pg.screenshot(path=str(path))
    return path


def _ask(pg, question: str) -> None:
    box = pg.locator("#question textarea")
    box.fill(question)
    box.press("Enter")


def _last_bot(pg):
    return pg.locator("#chat [data-testid='bot']").last


def _open(pg, url: str) -> None:
    pg.goto(url)
    expect(pg.locator("#question textarea")).to_be_visible()


def test_extractive_answer_chip_opens_highlighted_passage(page, offline_app):
    _open(page, offline_app)
    _ask(page, QUESTION)
    bot = _last_bot(page)
    chip = bot.locator("a.cite-chip").first
    expect(chip).to_be_visible(timeout=TIMEOUT)
    # status line: extractive because Ollama is not reachable, and the note says what to run
    expect(bot.locator(".answer-status")).to_contain_text("mode: extractive")
    expect(bot.locator(".answer-note").first).to_contain_text("ollama")
    # quotes carry a language badge
    expect(bot.locator(".lang-tag").first).to_be_visible()
    # Sources panel: cards with the quote marked, uncited passages collapsed with scores
    card = page.locator("#sources .src-card:not(.other)").first
    expect(card.locator("mark")).to_be_visible()
    expect(card.locator(".src-file")).to_have_text(re.compile(r"^\d{3}_[0-9a-f]+\.txt$"))
    expect(page.locator("#sources details.src-other summary")).to_contain_text("not cited")

    chip.click()
    mark = page.locator("#viewer #viewer-mark")
    expect(mark).to_be_visible()
    expect(mark).to_be_in_viewport()
    quote = card.locator("mark").inner_text().strip()
    assert mark.inner_text().strip() in quote
    expect(page.locator("#sources .src-card.active")).to_have_count(1)
    shot = _shot(page, "ui-extractive.png")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "screenshot.png")
    assert page.dialogs == []


def test_example_follow_up_and_new_chat(page, offline_app):
    _open(page, offline_app)
    page.locator("#examples").get_by_text("Яку зброю КНДР постачає Росії?").click()
    expect(_last_bot(page).locator("a.cite-chip").first).to_be_visible(timeout=TIMEOUT)
    _ask(page, "Колко артилерийски снаряда е изпратила Северна Корея на Русия?")
    expect(page.locator("#chat [data-testid='bot']")).to_have_count(2, timeout=TIMEOUT)
    expect(_last_bot(page).locator(".answer-status")).to_be_visible(timeout=TIMEOUT)
    # a chip of the *first* answer still opens that answer's source
    page.locator("#chat [data-testid='bot']").first.locator("a.cite-chip").first.click()
    expect(page.locator("#viewer #viewer-mark")).to_be_visible()
    expect(page.locator("#sources .sources-q")).to_contain_text("Яку зброю")
    page.locator("#new-chat").click()
    expect(page.locator("#chat [data-testid='bot']")).to_have_count(0)
    expect(page.locator("#sources")).to_contain_text("Ask a question")


def test_article_with_html_payloads_renders_inert(page, offline_app):
    _open(page, offline_app)
    _ask(page, XSS_QUESTION + " <img src=x onerror=alert(3)>")
    bot = _last_bot(page)
    expect(bot.locator(".answer-status")).to_be_visible(timeout=TIMEOUT)
    # the user's own markup is shown as text
    expect(page.locator("#chat [data-testid='user']").last).to_contain_text("<img src=x")
    # open the article: by its chip when cited, else from the article list
    chips = bot.locator("a.cite-chip")
    if chips.count():
        page.locator("#sources .src-card", has_text="zorblat_xss.txt").locator(
            "a.cite-chip").first.click()
    else:
        page.locator("#doc-pick input").click()
        page.get_by_role("option", name=re.compile("zorblat_xss")).click()
    viewer = page.locator("#viewer .viewer-body")
    expect(viewer).to_contain_text("<script>alert(1)</script>")
    expect(viewer).to_contain_text("<img src=x onerror=alert(2)>")
    time.sleep(1.0)  # give a broken <img> time to fire onerror, if one had been injected
    assert page.dialogs == []
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("[...document.scripts].some(s => s.text.includes('alert('))") is False
    _shot(page, "ui-xss.png")


def test_upload_article_then_cite_it(page, offline_app, tmp_path):
    _open(page, offline_app)
    page.locator("#add-article").get_by_text("Add an article").click()
    good = tmp_path / "trelbor.txt"
    good.write_text(UPLOAD_ARTICLE, encoding="utf-8")
    file_input = page.locator("#upload input[type=file]")
    file_input.set_input_files(str(good))
    status = page.locator("#upload-status")
    expect(status).to_contain_text("Added", timeout=TIMEOUT)
    expect(status).to_contain_text("Vulkan Trelbor ponovo aktivan")
    # the same file again: nothing changes
    page.locator("#upload input[type=file]").set_input_files(str(good))
    expect(status).to_contain_text("already indexed", timeout=TIMEOUT)
    # not UTF-8: a readable message, and the app goes on
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Vulkan u Meksiku, ćup i šešir".encode("cp1250"))
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    expect(status).to_contain_text("not UTF-8", timeout=TIMEOUT)
    # the uploaded article is now citable
    _ask(page, "Koji vulkan je ponovo izbacio pepeo na ostrvu Meskal?")
    expect(_last_bot(page).locator("a.cite-chip").first).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#sources")).to_contain_text("trelbor.txt")


def test_generate_mode_streams_then_cites(page, scripted_app):
    _open(page, scripted_app)
    _ask(page, QUESTION)
    bot = _last_bot(page)
    # partial text with the typing cursor shows before the answer is complete
    expect(bot.locator(".typing")).to_be_visible(timeout=TIMEOUT)
    expect(bot).to_contain_text("North Korea")
    assert bot.locator(".answer-status").count() == 0
    chip = bot.locator("a.cite-chip").first
    expect(chip).to_be_visible(timeout=TIMEOUT)
    expect(bot.locator(".typing")).to_have_count(0)
    expect(bot.locator(".answer-status")).to_contain_text("mode: generate")
    expect(bot.locator(".answer-status")).to_contain_text("scripted")
    chip.click()
    expect(page.locator("#viewer #viewer-mark")).to_be_in_viewport()
    _shot(page, "ui-generate.png")


def test_backend_dying_mid_answer_is_reported(page, scripted_app):
    _open(page, scripted_app)
    _ask(page, "How many artillery shells did North Korea send?")
    bot = _last_bot(page)
    expect(bot.locator(".answer-error")).to_contain_text("ollama serve", timeout=TIMEOUT)
    expect(page.locator("#question textarea")).to_be_editable()


def test_refusal_is_shown_without_sources(page, scripted_app):
    _open(page, scripted_app)
    _ask(page, "Who won the 1930 football World Cup in Uruguay?")
    bot = _last_bot(page)
    expect(bot.locator(".answer-status")).to_be_visible(timeout=TIMEOUT)
    expect(bot.locator(".refusal")).to_contain_text("The articles don't say.")
    expect(bot.locator("a.cite-chip")).to_have_count(0)
    expect(page.locator("#sources .no-sources")).to_be_visible()
    expect(page.locator("#sources .src-card:not(.other)")).to_have_count(0)
