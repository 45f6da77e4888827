"""The page's "Download the released weights" button: the released files (official layout, fixture sizes) come from a
stand-in Hub on 127.0.0.1 through huggingface_hub's real download code, then load without a restart; cancelling
and failures leave the app up and able to try again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gradio as gr
import pytest
import torch
from fake_hub import fake_hub
from huggingface_hub import constants
from test_official_loading import build_hub_cache, fixture_config, fixture_official_state

from codi.hub import FP16_FOLDER, OFFICIAL_FILES, OFFICIAL_REPO, cached_official_files
from ui.app import create_demo, launch_options
from ui.engine import Engine
from ui.handlers import FORM_FIELDS, RESULT_FIELDS, Studio


class Recorder:
    """Stands in for gr.Progress: keeps every (fraction, description)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, desc: str | None = None, **kwargs: object) -> None:
        self.calls.append((float(fraction), desc or ""))


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> dict[str, Path]:
    """{repository path: file}: the four fp16 files, split as released, of a fixture-size official model."""
    root = build_hub_cache(tmp_path_factory.mktemp("hub"), fixture_official_state())
    snapshot = next((root / f"models--{OFFICIAL_REPO.replace('/', '--')}" / "snapshots").iterdir())
    return {f"{FP16_FOLDER}/{name}": snapshot / FP16_FOLDER / name for name in OFFICIAL_FILES}


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's offline mode off (conftest turns it on for every other test)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def engine_without_weights(tmp_path: Path) -> Engine:
    """`app.py --model official` on a machine whose cache lacks the files: the start never downloads."""
    return Engine.load(
        "official", runs_dir=tmp_path / "runs", cache_dir=str(tmp_path / "cache"), config=fixture_config(),
        local_files_only=True,
    )  # fmt: skip


def test_the_page_offers_the_download_only_when_the_released_weights_are_missing(tmp_path):
    engine = engine_without_weights(tmp_path)
    assert engine.pipe is None and engine.can_download and "not all on this machine" in engine.info.problem
    config = str(create_demo(engine, tmp_path / "rec").get_config_file())
    assert "Download the released weights (11.6 GB)" in config
    tiny = Engine.load("tiny", runs_dir=tmp_path / "runs")
    assert not tiny.can_download
    studio = Studio(tiny, tmp_path / "rec", tmp_path / "examples.json")
    banner, row = studio.page_state()
    assert "Model: tiny" in banner and row["visible"] is False


@pytest.mark.usefixtures("online")
def test_download_shows_progress_then_serves_the_model_without_restart(tmp_path, released, monkeypatch):
    engine = engine_without_weights(tmp_path)
    studio = Studio(engine, tmp_path / "rec", tmp_path / "examples.json")
    with fake_hub(OFFICIAL_REPO, released) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        progress = Recorder()
        banner, row, status = studio.download(progress=progress)
    assert [f for m, f in hub.requests if m == "GET"] == list(released)  # each file fetched once, in order
    assert "Model: fixture" in banner and "not loaded" not in banner and row["visible"] is False
    assert "Downloaded and loaded" in status and engine.pipe is not None and not engine.can_download
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 2 * len(OFFICIAL_FILES)
    assert any("of" in d and FP16_FOLDER not in d and d.startswith("Downloading") for _, d in progress.calls)
    assert len(cached_official_files("fp16", tmp_path / "cache")) == 4  # in the Hugging Face cache, for next time
    form = dict.fromkeys(FORM_FIELDS) | {f"{m}_weight": 1.0 for m in ("text", "image", "video", "audio")}
    form |= {"text": "a dog", "outputs": ["image"], "steps": 2, "seed": 1, "num_samples": 1}
    torch.manual_seed(0)
    out = dict(zip(RESULT_FIELDS, studio.generate(**form)))
    assert Path(out["image_out"]).exists()
    assert studio.page_state()[1]["visible"] is False  # a page opened now shows the model, no button


@pytest.mark.usefixtures("online")
def test_a_cancelled_download_keeps_the_app_up_and_can_be_run_again(tmp_path, released, monkeypatch):
    engine = engine_without_weights(tmp_path)
    studio = Studio(engine, tmp_path / "rec", tmp_path / "examples.json")
    with fake_hub(OFFICIAL_REPO, released, delay=0.02) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        progress = Recorder()
        result: list = []
        worker = threading.Thread(target=lambda: result.append(studio.download(progress=progress)))
        worker.start()
        deadline = time.monotonic() + 60
        while not any(f > 0 for f, _ in progress.calls) and time.monotonic() < deadline:
            time.sleep(0.02)
        studio.cancel_download()
        worker.join(60)
        assert result and result[0][2] == "Download cancelled."
        assert engine.pipe is None and engine.can_download and not engine.stop_download()
        assert len(cached_official_files("fp16", tmp_path / "cache")) < 4
        hub.delay = 0.0
        banner, row, _ = studio.download(progress=Recorder())  # the same button again
    assert engine.pipe is not None and "Model: fixture" in banner


@pytest.mark.usefixtures("online")
def test_an_unreachable_hub_is_a_message_and_the_button_stays(tmp_path, monkeypatch):
    engine = engine_without_weights(tmp_path)
    studio = Studio(engine, tmp_path / "rec", tmp_path / "examples.json")
    with fake_hub(OFFICIAL_REPO, {}) as hub:
        url = hub.url
    monkeypatch.setenv("HF_ENDPOINT", url)  # nothing listens there any more
    with pytest.raises(gr.Error, match="cannot be reached"):
        studio.download(progress=Recorder())
    assert engine.pipe is None and engine.can_download and studio.page_state()[1]["visible"] is True


@pytest.mark.browser
@pytest.mark.usefixtures("online")
def test_the_button_in_a_browser(tmp_path, released, monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from test_e2e_browser import CHROMIUM, CHROMIUM_FLAGS, SCREENSHOTS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    engine = engine_without_weights(tmp_path)
    with fake_hub(OFFICIAL_REPO, released, delay=0.01) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        demo = create_demo(engine, tmp_path / "rec")
        demo.launch(prevent_thread_lock=True, **launch_options(engine, tmp_path / "rec"))
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(demo.local_url)
                page.locator("#download-btn").click()
                status = page.locator("#download-status")
                sync_api.expect(status).to_contain_text("Downloading", timeout=30_000)
                page.screenshot(path=str(SCREENSHOTS / "download-progress.png"))
                sync_api.expect(page.locator("#model-banner")).to_contain_text("Model: fixture", timeout=120_000)
                sync_api.expect(page.locator("#download-row")).to_be_hidden()
                sync_api.expect(status).to_contain_text("Downloaded and loaded")
                again = browser.new_page()
                again.goto(demo.local_url)  # a page opened later: the model, no button
                sync_api.expect(again.locator("#model-banner")).to_contain_text("Model: fixture")
                sync_api.expect(again.locator("#download-row")).to_be_hidden()
                browser.close()
        finally:
            demo.close()
