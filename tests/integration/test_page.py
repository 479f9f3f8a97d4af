"""The chat page at ``/`` (issue 28) in a real browser: Debian's chromium (``make test`` installs it when
missing and root) driven by Playwright for Python through ``executable_path`` (its own browsers cannot
be downloaded here), against a real ``thinkgate serve`` process on the default model (or
``THINKGATE_PAGE_MODEL``) with API and admin keys set, the test documents added through the public API.

Covered: a direct turn's badge, entropy chart and sources; a high-effort turn's reasoning fold and
steps; Enter / Shift+Enter and one request per send; an uploaded document cited, then deleted and gone;
markup in a document's text and name shown as text and never run (the page's CSP too); a wrong key's
401 shown as a message with the page still usable; no horizontal scroll at 375 px. Screenshots of the
direct and thinking turns go to ``THINKGATE_SCREENSHOT_DIR`` when it is set (the README's are made so).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from policy.models import DEFAULT_POLICY
from tests.helpers import ServerProcess
from tests.pgcluster import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
KEY, ADMIN = "page-user-key", "page-admin-key"
CHROMIUM = os.environ.get("THINKGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# flags that keep a root, offline, headless chromium quiet (no sandbox as root, no background network)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
TURN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    env = {**os.environ, "THINKGATE_INDEX_DIR": str(tmp / "index"), "THINKGATE_THREADS_DB": str(tmp / "threads.sqlite"),
           "THINKGATE_API_KEYS": KEY, "THINKGATE_ADMIN_API_KEYS": ADMIN,
           "THINKGATE_MODEL": os.environ.get("THINKGATE_PAGE_MODEL", DEFAULT_POLICY)}
    port = free_port()
    srv = ServerProcess([sys.executable, "-m", "cli", "serve", "--port", str(port), "--log-level", "warning"],
                        port, tmp / "serve.log", env=env, cwd=ROOT)
    try:
        srv.wait_ready("/healthz", timeout=300.0)
        for f in sorted(DATA.glob("*.md")):  # the test documents, through the public ingest path
            r = httpx.post(srv.base + "/v1/documents", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120,
                           json={"source": f.name, "text": f.read_text(), "format": "md"})
            assert r.status_code == 201, r.text
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (make test does, as root)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
async def page(browser, server):
    """A fresh page on the server with the user key typed in; records page errors and chat requests."""
    ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
    pg = await ctx.new_page()
    pg.errors, pg.chats = [], []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("request", lambda req: pg.chats.append(req) if req.url.endswith("/v1/chat/completions") else None)
    pg.response = await pg.goto(server.base + "/")
    await pg.fill("#api-key", KEY)
    await pg.dispatch_event("#api-key", "change")
    yield pg
    assert pg.errors == [], pg.errors  # no script error in any test
    await ctx.close()


async def ask(pg, text: str, effort: str = "auto", max_tokens: int | None = 96):
    """Type `text`, press Enter, wait for the turn to finish; returns the turn's locator."""
    await pg.select_option("#effort", effort)
    await pg.fill("#max-tokens", str(max_tokens) if max_tokens else "")
    n = await pg.locator("#log .turn").count()
    await pg.fill("#prompt", text)
    await pg.press("#prompt", "Enter")
    turn = pg.locator("#log .turn").nth(n)
    await turn.locator(".badges, .turn-error").first.wait_for(timeout=TURN_TIMEOUT_MS)
    return turn


async def shot(pg, name: str) -> None:
    out = os.environ.get("THINKGATE_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        await pg.screenshot(path=str(Path(out) / name), full_page=True)


async def test_the_page_is_served_with_a_restrictive_csp(page):
    csp = page.response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert await page.title() == "thinkgate"
    await page.locator("#model").filter(has_text="qwen").or_(page.locator("#model").filter(has_text="smollm")).wait_for()


async def test_a_direct_turn_shows_its_badge_entropy_chart_and_sources(page):
    turn = await ask(page, "What is a list comprehension?", "none", 48)
    assert await turn.locator(".badge").inner_text() == "answered at once"
    assert "reasoning_effort=none" in await turn.locator(".reason").inner_text()
    assert await turn.locator(".gate svg rect.bar").count() >= 1 and await turn.locator(".gate svg line.tau").count() == 1
    assert await turn.locator(".reasoning").is_hidden()
    src = turn.locator(".source").first
    assert (await src.locator(".src-path").inner_text()) == "lists.md"
    assert await src.locator(".passage").is_hidden()
    await src.locator("summary").click()
    assert "comprehension" in (await src.locator(".passage").inner_text()).lower()
    ledger = await turn.locator(".ledger").inner_text()
    assert "of max 48" in ledger and " s" in ledger
    assert (await turn.locator(".answer").inner_text()).strip()
    assert len(page.chats) == 1  # one request per send
    await shot(page, "page-direct.png")


async def test_a_high_effort_turn_folds_its_reasoning_with_steps(page):
    turn = await ask(page, "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. "
                           "How much change does he get?", "high", 160)
    # a thinking turn: "thought", or "voted" when the probe was still uncertain at the budget (model-dependent)
    assert await turn.locator(".badge").inner_text() in ("thought", "voted")
    fold = turn.locator("details.reasoning")
    summary = await fold.locator("summary").inner_text()
    assert summary.startswith("Thought for ") and "step" in summary
    assert await fold.locator(".step").first.is_hidden()  # folded until clicked
    await fold.locator("summary").click()
    assert await fold.locator(".step").count() >= 1
    assert (await fold.locator(".step pre").first.inner_text()).strip()
    await shot(page, "page-thinking.png")


async def test_enter_sends_once_and_shift_enter_adds_a_line(page):
    await page.fill("#prompt", "first line")
    await page.press("#prompt", "Shift+Enter")
    await page.type("#prompt", "second line")
    assert await page.input_value("#prompt") == "first line\nsecond line" and page.chats == []
    await page.select_option("#effort", "none")
    await page.fill("#max-tokens", "8")
    await page.press("#prompt", "Enter")
    await page.press("#prompt", "Enter")  # while answering: ignored
    await page.click("#send", force=True)  # the disabled button fires nothing either
    await page.locator("#log .turn .badges").first.wait_for(timeout=TURN_TIMEOUT_MS)
    assert len(page.chats) == 1
    assert await page.locator("#log .turn .user").inner_text() == "first line\nsecond line"


async def test_an_uploaded_document_is_cited_then_deleted_and_gone(page):
    await page.fill("#admin-key", ADMIN)
    await page.set_input_files("#upload", files=[{"name": "quokka-notes.md", "mimeType": "text/markdown", "buffer":
        b"# The quokkadrome\n\nThe quokkadrome is the stadium in Perth where quokkas race at dawn every Sunday.\n"}])
    await page.locator("#doc-status").filter(has_text="added quokka-notes.md").wait_for(timeout=60_000)
    row = page.locator("#docs li[data-source='quokka-notes.md']")
    await row.wait_for()
    turn = await ask(page, "Where do quokkas race at dawn?", "none", 48)
    src = turn.locator(".source", has=page.locator(".src-path", has_text="quokka-notes.md"))
    assert await src.count() == 1
    cites = turn.locator(".answer a.cite")
    if await cites.count():  # a [n] in the answer opens its passage
        await cites.first.click()
        assert await turn.locator("details.source[open]").count() == 1
    await src.locator("summary").click()
    assert "Perth" in await src.locator(".passage").inner_text()
    await row.locator("button").click()
    await page.locator("#doc-status").filter(has_text="deleted quokka-notes.md").wait_for(timeout=60_000)
    assert await page.locator("#docs li[data-source='quokka-notes.md']").count() == 0
    again = await ask(page, "Where do quokkas race at dawn?", "none", 8)
    assert await again.locator(".src-path", has_text="quokka-notes.md").count() == 0


async def test_markup_in_a_document_is_shown_as_text_and_never_runs(page):
    name = "<img src=x onerror=window.__pwned=1>.md"
    text = ("# Quokka fence\n\nThe quokka fence <img src=x onerror=window.__pwned=2> keeps quokkas in Rottnest park."
            "\n\n<script>window.__pwned=3</script> The fence is green.\n")
    await page.fill("#admin-key", ADMIN)
    await page.set_input_files("#upload", files=[{"name": name, "mimeType": "text/markdown", "buffer": text.encode()}])
    await page.locator("#doc-status").filter(has_text="added").wait_for(timeout=60_000)
    turn = await ask(page, "What keeps quokkas in Rottnest park?", "none", 48)
    src = turn.locator(".source", has=page.locator(".src-path", has_text="onerror"))
    assert await src.count() == 1 and await src.locator(".src-path").inner_text() == name
    await src.locator("summary").click()
    assert "<img src=x onerror=window.__pwned=2>" in await src.locator(".passage").inner_text()
    assert await page.locator("#log img, #log script, #docs img").count() == 0
    assert await page.evaluate("window.__pwned") is None


async def test_a_wrong_key_shows_the_401_message_and_the_page_stays_usable(page):
    await page.fill("#api-key", "not-a-key")
    turn = await ask(page, "What is a list comprehension?", "none", 8)
    await page.locator("#error").wait_for()
    msg = await page.locator("#error").inner_text()
    assert msg.startswith("The answer failed: 401") and "key" in msg.lower()
    assert await turn.locator(".turn-error").count() == 1 and await page.locator("#send").is_enabled()
    await page.fill("#api-key", KEY)
    ok = await ask(page, "What is a list comprehension?", "none", 8)
    assert await ok.locator(".badge").inner_text() == "answered at once" and await page.locator("#error").is_hidden()


async def test_readable_at_375_px_without_horizontal_scroll(page):
    await page.set_viewport_size({"width": 375, "height": 800})
    await ask(page, "What is a list comprehension?", "none", 24)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"page is {width} px wide at a 375 px viewport"
    box = await page.locator("#prompt").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375


async def test_the_demo_index_build_shows_its_progress(page):
    """/healthz while the demo index builds (answered by the browser's route: the build itself takes minutes)."""
    building = {"status": "ok", "policy": {}, "chunks": 120, "index": {"state": "building", "files_done": 3,
                "files_total": 10, "chunks": 120, "chunks_per_s": 40.0, "eta_s": 12.2, "partial": True}}
    await page.route("**/healthz", lambda route: route.fulfill(json=building))
    await page.reload()
    await page.locator("#health").filter(has_text="3/10 files").wait_for(timeout=10_000)
    assert "about 13 s left" in await page.locator("#health").inner_text()
    building["index"].update(state="done", files_done=10, partial=False, eta_s=0)
    building["chunks"] = 400
    await page.locator("#health").filter(has_text="ready · 400 chunks").wait_for(timeout=10_000)


async def test_a_stream_that_fails_shows_its_error_and_the_page_stays_usable(page):
    """The server's SSE error event (here a deadline, sent by the browser's route) after some content."""
    sse = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
           '"delta":{"role":"assistant","content":"Partial"}}]}\n\n'
           'data: {"error":{"message":"the request did not finish within the server\'s deadline","type":"server_error",'
           '"param":null,"code":"deadline_exceeded"}}\n\ndata: [DONE]\n\n')
    await page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=sse))
    turn = await ask(page, "What is a list comprehension?", "none", 8)
    assert "deadline_exceeded" in await turn.locator(".turn-error").inner_text()
    assert await turn.locator(".answer").inner_text() == "Partial"
    assert await page.locator("#send").is_enabled() and await page.locator("#prompt").is_editable()
    await page.unroute("**/v1/chat/completions")
    ok = await ask(page, "What is a list comprehension?", "none", 8)
    assert await ok.locator(".badge").inner_text() == "answered at once"


async def test_a_conversation_continues_its_thread_and_can_be_reopened(page):
    await ask(page, "My name is Ada Lovelace.", "none", 16)
    tid = await page.locator("#thread-id").inner_text()
    assert tid != "new"
    await ask(page, "What is my name?", "none", 16)
    import json

    bodies = [json.loads(r.post_data) for r in page.chats]
    assert bodies[0].get("store") is True and "thread_id" not in bodies[0]
    assert bodies[1]["thread_id"] == tid and [m["content"] for m in bodies[1]["messages"]] == ["What is my name?"]
    await page.click("#new-chat")
    assert await page.locator("#thread-id").inner_text() == "new" and await page.locator("#log .turn").count() == 0
    await page.fill("#open-thread", tid)
    await page.click("#open-thread-btn")
    await page.locator("#log .turn.past").nth(3).wait_for()
    assert await page.locator("#log .turn.past .user").nth(0).inner_text() == "My name is Ada Lovelace."
    assert await page.locator("#thread-id").inner_text() == tid
    await page.fill("#open-thread", "no-such-thread")
    await page.click("#open-thread-btn")
    await page.locator("#error").filter(has_text="404").wait_for()
