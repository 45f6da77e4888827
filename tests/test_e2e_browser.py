"""End to end: `python app.py` on localhost, driven in headless Chromium (Debian's, through playwright).

Covers a text -> image + audio generation, saving it as a recording, replaying it from the History tab (same
bytes), an example click, the progress bar with its ETA, cancelling, an input error, that every request the
page makes stays on 127.0.0.1, and the README's gradio_client snippet. Screenshots go to outputs/screenshots/
(or $CODI_SCREENSHOTS). Skips, saying why, when playwright or Chromium is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from app_process import REPO, running_app

SCREENSHOTS = Path(os.environ.get("CODI_SCREENSHOTS", REPO / "outputs" / "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
expect = sync_api.expect


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """`python app.py` in a subprocess, with its own recordings, runs and a copy of the examples."""
    work = tmp_path_factory.mktemp("studio")
    shutil.copytree(REPO / "assets", work / "assets")
    env = {"OMP_NUM_THREADS": "1"}  # the tiny model is fastest on one thread; leaves a core for the browser
    env |= {"GRADIO_CACHE_EXAMPLES": "lazy", "GRADIO_EXAMPLES_CACHE": str(work / "examples-cache")}  # as on a Space
    args = ["--recordings", str(work / "recordings"), "--runs", str(work / "runs")]
    args += ["--examples", str(work / "assets" / "examples.json")]
    with running_app(args, work, env) as url:
        yield {"url": url, "work": work}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)  # a fresh profile each launch
        yield b
        b.close()


@pytest.fixture
def page(browser, studio):
    """A page on the Studio that records every request it makes."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    pg.requests = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(studio["url"])
    pg.wait_for_selector("#generate-btn")
    yield pg
    context.close()


def shot(pg, name: str, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pg.mouse.move(2, 2)  # no hover highlight in the picture
    pg.screenshot(path=str(path), full_page=full_page)
    return path


def runs(studio) -> list[Path]:
    folder = studio["work"] / "runs"
    done = [p for p in folder.iterdir() if (p / "result.json").exists()] if folder.exists() else []
    return sorted(done, key=lambda p: p.stat().st_mtime)


def wait_for(condition, what: str, timeout: float = 60.0):
    start = time.perf_counter()
    while not (value := condition()):
        if time.perf_counter() - start > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)
    return value


def test_generate_image_and_audio_record_and_replay(page, studio):
    expect(page.locator("#model-banner")).to_contain_text("Model: tiny")
    page.locator("#text-in textarea").fill("a red circle")
    page.locator("#outputs label", has_text="Audio").click()
    page.locator("#advanced").click()
    page.locator("#randomize-seed input").uncheck()
    page.locator("#seed input").fill("7")
    page.locator("#seed input").press("Tab")
    start = time.perf_counter()
    page.locator("#generate-btn").click()
    expect(page.locator("#image-out img")).to_be_visible()
    expect(page.locator("#audio-out [data-testid=download-link]")).to_have_attribute("href", re.compile(r"audio\.wav$"))
    expect(page.locator("#result-summary")).to_contain_text("seed 7")
    print(f"[e2e] text -> image + audio shown in {time.perf_counter() - start:.1f} s")
    expect(page.locator("#files a[href$='result.json']")).to_have_count(1)
    shot(page, "studio-result")

    page.get_by_placeholder("Recording title (optional)").fill("e2e red circle")
    page.locator("#save-btn").click()
    expect(page.locator("#save-status")).to_contain_text("Saved")
    saved = list((studio["work"] / "recordings").iterdir())
    assert len(saved) == 1 and (saved[0] / "recording.json").exists() and (saved[0] / "audio.wav").exists()

    page.get_by_role("tab", name="History").click()
    page.locator("#history-gallery img").first.click()
    expect(page.locator("#history-detail")).to_contain_text("e2e red circle")
    expect(page.locator("#hist-image-out img")).to_be_visible()
    shot(page, "history")

    before = len(runs(studio))
    page.locator("#regen-btn").click()
    expect(page.locator("#generate-btn")).to_be_visible()  # back on the Studio tab
    newest = wait_for(lambda: len(runs(studio)) > before and runs(studio)[-1], "the replayed run")
    assert (newest / "image.png").read_bytes() == (saved[0] / "image.png").read_bytes()
    assert (newest / "audio.wav").read_bytes() == (saved[0] / "audio.wav").read_bytes()
    expect(page.locator("#result-summary")).to_contain_text("seed 7")
    off_host = [u for u in page.requests if urlparse(u).hostname not in ("127.0.0.1", None)]
    assert not off_host, f"the page fetched from outside localhost: {off_host}"


def test_example_progress_cancel_and_errors(page, studio):
    page.locator("#advanced").click()  # opened first: its sliders then take the example's values at once
    page.locator("#text-in textarea").fill("left over from before")
    example = page.locator("#examples-gallery img[src$='/text-to-video-audio.png']")
    example.click()  # the first click computes the example's result (and caches it)
    expect(page.locator("#text-in textarea")).to_have_value("a red square moving up")
    expect(page.locator("#outputs label", has_text="Video").locator("input")).to_be_checked()
    expect(page.locator("#seed input")).to_have_value("11")  # the example's seed
    expect(page.locator("#video-out video")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#audio-out [data-testid=download-link]")).to_have_attribute("href", re.compile(r"audio\.wav$"))
    expect(page.locator("#result-summary")).to_contain_text("seed 11")
    cached_runs = len(runs(studio))
    page.locator("#examples-gallery img[src$='/text-to-image.png']").click()
    expect(page.locator("#image-out img")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#video-out video")).to_be_hidden()
    start = time.perf_counter()
    example.click()  # the second click reads the cache
    expect(page.locator("#video-out video")).to_be_visible()
    print(f"[e2e] cached example shown in {time.perf_counter() - start:.2f} s")
    assert len(runs(studio)) == cached_runs + 1  # only text -> image ran; the video example came from the cache
    expect(page.locator("#save-status")).to_contain_text("press **Generate**".replace("**", ""))
    page.locator("#steps input[type=range]").fill("200")  # a long run, to watch its progress
    expect(page.locator("#steps input[type=number]")).to_have_value("200")
    before = len(runs(studio))
    page.locator("#generate-btn").click()
    expect(page.locator("#run-status")).to_contain_text("left")  # "Denoising · about N s left"
    expect(page.locator("#run-status")).to_contain_text("/200")
    page.locator("#run-status").scroll_into_view_if_needed()
    shot(page, "progress", full_page=False)
    page.locator("#cancel-btn").click()
    expect(page.locator("#run-status")).not_to_contain_text("left", timeout=15_000)
    time.sleep(2)
    assert len(runs(studio)) == before  # the cancelled run wrote nothing
    expect(page.locator("#text-in textarea")).to_have_value("a red square moving up")  # the form is kept

    for name in ("Video", "Audio"):
        page.locator("#outputs label", has_text=name).click()
    page.locator("#generate-btn").click()
    expect(page.get_by_text("Tick at least one output")).to_be_visible()
    page.wait_for_timeout(600)  # let the message slide in before the picture
    shot(page, "input-error", full_page=False)
    assert "Traceback" not in page.content()


def readme_client_snippet() -> str:
    """The gradio_client code block of README's "The Studio" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The Studio", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return next(b for b in blocks if "gradio_client" in b)


OVERFLOWING = """(root) => [...document.querySelectorAll(root + ' *')]
  .filter(e => e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
  .map(e => `${e.id || e.querySelector("[id]")?.id || e.innerText.slice(0, 30)} ${e.scrollWidth}>${e.clientWidth}`)"""


@pytest.mark.parametrize("width", [1360, 1024, 800, 420])
def test_form_has_no_horizontal_scrollbars(browser, studio, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(studio["url"])
    page.wait_for_selector("#generate-btn")
    page.locator("#advanced").click()
    expect(page.locator("#steps")).to_be_visible()
    assert page.evaluate(OVERFLOWING, "#studio-row") == []  # e.g. the input-weight sliders squeezed below their width
    if width == 1024:
        page.locator("#weights").screenshot(path=str(SCREENSHOTS / "input-weights.png"))
    context.close()


def test_readme_gradio_client_snippet(studio, monkeypatch, capsys):
    code = readme_client_snippet().replace("http://127.0.0.1:7860/", studio["url"])
    monkeypatch.chdir(REPO)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the snippet as a reader would paste it
    assert "seed `7`" in scope["summary"] and scope["text"] is None and scope["image"] is None
    assert Path(scope["video"]).suffix == ".mp4" and Path(scope["video"]).stat().st_size > 0
    assert Path(scope["audio"]).suffix == ".wav" and isinstance(scope["caption"], str) and scope["caption"]
