"""The example gallery on a Space: Gradio's lazy example cache keeps each example's result after its first click."""

from __future__ import annotations

import dataclasses
import inspect
import shutil
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client

from ui.app import caches_examples, create_demo, examples_cache_folder, launch_options
from ui.engine import Engine
from ui.examples import DEFAULT_EXAMPLES, load_examples
from ui.handlers import EXAMPLE_FIELDS, EXAMPLE_VIEW_FIELDS, Studio


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Engine.load("tiny", runs_dir=tmp_path_factory.mktemp("runs"))
    torch.set_num_threads(threads)


@pytest.fixture
def examples_json(tmp_path) -> Path:
    path = tmp_path / "assets" / "examples.json"
    shutil.copytree(DEFAULT_EXAMPLES.parent / "examples", path.parent / "examples")
    shutil.copyfile(DEFAULT_EXAMPLES, path)
    return path


def test_examples_run_once_then_come_from_the_cache(engine, examples_json, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "cache"))
    runs = []
    real_run = engine.run
    monkeypatch.setattr(engine, "run", lambda *a, **k: runs.append(a[0]) or real_run(*a, **k))
    demo = create_demo(engine, tmp_path / "rec", examples_json, cache_examples=True)
    demo.launch(prevent_thread_lock=True, **launch_options(engine, tmp_path / "rec", examples_json))
    try:
        client = Client(demo.local_url, verbose=False)
        ids = [e.id for e in load_examples(examples_json, "tiny")]
        index = ids.index("text-to-video-audio")
        first = dict(zip(EXAMPLE_FIELDS, client.predict(index, api_name="/load_example")))
        assert len(runs) == 1 and runs[0].outputs == ["video", "audio"] and runs[0].seed == 11  # the example's
        again = dict(zip(EXAMPLE_FIELDS, client.predict(index, api_name="/load_example")))
        assert len(runs) == 1  # the second click reads the cache: no generation
        assert again["summary"] == first["summary"] and again["seed"] == 11
        names = sorted(Path(f).name for f in again["files"])
        assert names == ["audio.wav", "result.json", "video.mp4"]
        cached = {Path(f).name: Path(f).read_bytes() for f in again["files"]}
        assert cached == {Path(f).name: Path(f).read_bytes() for f in first["files"]}
        folder = examples_cache_folder(Studio(engine, tmp_path / "rec", examples_json))
        assert folder.parent == tmp_path / "cache" and (folder / "cards" / "text-to-video-audio.png").exists()
        assert len(list(folder.rglob("log.csv"))) == 1  # Gradio's cache, inside this model's folder
    finally:
        demo.close()


def test_a_cached_example_shows_its_files(engine, examples_json):
    studio = Studio(engine, "unused", examples_json)
    files = ["/c/1/video.mp4", "/c/2/audio.wav", "/c/3/result.json"]
    view = dict(zip(EXAMPLE_VIEW_FIELDS, studio.show_example("", files)))
    assert view["video_out"] == {"__type__": "update", "value": "/c/1/video.mp4", "visible": True}
    assert view["image_out"]["visible"] is False and view["text_out"]["visible"] is False
    assert view["audio_out"]["value"] == "/c/2/audio.wav" and view["samples"]["visible"] is False
    assert view["save_btn"]["interactive"] is False and view["run_folder"] is None  # not this machine's run
    many = ["/c/1/image.png", "/c/2/image_1.png", "/c/3/text.txt", "/c/4/result.json"]
    view = dict(zip(EXAMPLE_VIEW_FIELDS, studio.show_example("a circle", many)))
    assert view["samples"]["value"] == ["/c/1/image.png", "/c/2/image_1.png"] and view["text_out"]["visible"]


def test_cache_folder_is_per_model_and_example_list(engine, examples_json, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "cache"))
    studio = Studio(engine, "unused", examples_json)
    folder = examples_cache_folder(studio)
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("tiny-")
    assert examples_cache_folder(studio) == folder  # stable across starts
    other = Studio(
        Engine(engine.pipe, dataclasses.replace(engine.info, dtype="bfloat16"), "unused"), "u", examples_json
    )
    assert examples_cache_folder(other) != folder  # another precision computes its own results
    audio = examples_json.parent / "examples" / "audio-to-text" / "audio.wav"
    audio.write_bytes(audio.read_bytes()[:-2] + b"\x00\x01")  # an example's input file changed
    assert examples_cache_folder(studio) != folder


def test_the_example_runner_keeps_gradio_arguments_and_never_caches_a_cancelled_run(engine, examples_json):
    studio = Studio(engine, "unused", examples_json)
    runner = studio.example_runner(studio.generate)
    params = list(inspect.signature(runner).parameters)
    assert params[0] == "card" and params[1:] == list(inspect.signature(studio.generate).parameters)
    _, progress_index, _, _ = gr.helpers.special_args(runner, [])
    assert progress_index == len(params) - 1  # Gradio still finds the progress tracker (and the request)

    def cancelled(*args, **kwargs):
        return [gr.skip() for _ in range(10)]

    with pytest.raises(gr.Error, match="cancelled"):
        studio.example_runner(cancelled)("card.png", "a circle")


def test_caching_is_on_for_spaces_or_when_asked(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("GRADIO_CACHE_EXAMPLES", raising=False)
    assert caches_examples(None) is False and caches_examples(True) is True
    monkeypatch.setenv("GRADIO_CACHE_EXAMPLES", "lazy")
    assert caches_examples(None) is True
    monkeypatch.delenv("GRADIO_CACHE_EXAMPLES")
    monkeypatch.setenv("SPACE_ID", "someone/codi")
    assert caches_examples(None) is True and caches_examples(False) is False
