"""CoDi Studio without a browser: the page builds, and its handlers run real generations with the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gradio as gr
import pytest
import torch

from ui.app import create_demo, launch_options
from ui.engine import Cancelled, Engine, GenerationRequest
from ui.examples import DEFAULT_EXAMPLES, load_examples
from ui.handlers import (
    DETAIL_FIELDS,
    FORM_FIELDS,
    RESULT_FIELDS,
    SHOWN_FIELDS,
    VIEW_FIELDS,
    RunProgress,
    Studio,
    form_to_request,
    request_to_form,
)
from ui.recordings import delete_recording, list_recordings, save_recording
from ui.theme import banner_html

STEPS = 3  # enough to exercise every stage; outputs are not judged here
BASE = {
    "text": "",
    "image": None,
    "video": None,
    "audio": None,
    "text_weight": 1.0,
    "image_weight": 1.0,
    "video_weight": 1.0,
    "audio_weight": 1.0,
    "outputs": ["image"],
    "steps": STEPS,
    "guidance": 2.0,
    "sampler": "ddim",
    "seed": 11,
    "randomize_seed": False,
    "coupling": "paper",
    "num_samples": 1,
    "text_temperature": None,  # the model's
    "partner_weight": None,  # the model's
}
# The combinations the paper shows; the example gallery must cover every one of them.
COMBINATIONS = {
    ("text", "image"), ("image", "text"), ("text", "audio"), ("audio", "text"), ("image", "audio"),
    ("audio", "image"), ("text", "video"), ("video", "text"), ("text+audio", "image"), ("text", "text+image"),
    ("text", "video+audio"), ("text+image+audio", "video+audio"),
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model is fastest on one thread, and robust to a busy machine (no spinning thread pool)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    return Engine.load("tiny", runs_dir=tmp_path_factory.mktemp("runs"), keep_runs=4)


@pytest.fixture
def studio(engine, tmp_path) -> Studio:
    examples = tmp_path / "assets" / "examples.json"
    shutil.copytree(DEFAULT_EXAMPLES.parent / "examples", examples.parent / "examples")
    shutil.copyfile(DEFAULT_EXAMPLES, examples)  # exports go to a copy, never to the repo
    return Studio(engine, tmp_path / "recordings", examples)


def generate(studio: Studio, **values) -> dict:
    form = {**BASE, **values}
    result = dict(zip(RESULT_FIELDS, studio.generate(*[form[k] for k in FORM_FIELDS])))
    shown = studio.show(*[result[k] for k in SHOWN_FIELDS])
    result["visible"] = dict(zip(VIEW_FIELDS, (u.get("visible", u.get("interactive")) for u in shown)))
    return result


def select(index: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


def asset(name: str) -> str:
    return str(DEFAULT_EXAMPLES.parent / "examples" / name)


def test_page_builds_with_named_api(engine, tmp_path):
    demo = create_demo(engine, recordings_dir=tmp_path / "rec")
    assert isinstance(demo, gr.Blocks)
    public = [f for f in demo.fns.values() if f.api_visibility == "public"]
    assert [f.api_name for f in public] == ["generate"]  # the one public endpoint; UI-only events are private
    assert public[0].concurrency_limit == 1 and public[0].concurrency_id == "model"
    assert demo._queue.max_size == 16
    assert demo.delete_cache == (3600, 86400)  # Gradio's upload cache is cleaned
    config = str(demo.get_config_file())
    assert "Model: tiny" in config and "CoDi Studio" in config
    assert engine.outputs == ["text", "image", "video", "audio"]
    options = launch_options(engine, tmp_path / "rec")
    assert options["ssr_mode"] is False and str(engine.runs_dir.resolve()) in options["allowed_paths"]


def test_generate_text_to_image_and_audio(studio):
    out = generate(studio, text="a red circle", outputs=["image", "audio"])
    folder = Path(out["run_folder"])
    assert Path(out["image_out"]).name == "image.png" and Path(out["audio_out"]).name == "audio.wav"
    assert out["video_out"] is None and out["text_out"] is None and out["samples"] is None
    assert out["visible"] == {"text_out": False, "image_out": True, "video_out": False, "audio_out": True,
                              "samples": False, "files": True, "save_btn": True}  # fmt: skip
    assert out["seed"] == 11 and "seed `11`" in out["summary"] and "“a red circle”" in out["summary"]
    assert {Path(p).name for p in out["files"]} == {"image.png", "audio.wav", "result.json"}
    params = out["params"]["params"]
    assert params["steps"] == STEPS and params["outputs"] == ["image", "audio"] and params["coupling"] == "paper"
    request = json.loads((folder / "request.json").read_text())
    assert request["seed"] == 11 and request["text"] == "a red circle"


def test_video_output_has_generated_audio_muxed(studio):
    from codi.media import probe_media

    out = generate(studio, text="a blue square sliding left", outputs=["video", "audio"])
    assert probe_media(Path(out["video_out"])).has_audio and out["visible"]["video_out"] and out["visible"]["audio_out"]


def test_random_seed_is_reported_and_reproduces(studio):
    first = generate(studio, text="a green wedge", outputs=["image", "text"], randomize_seed=True)
    again = generate(studio, text="a green wedge", outputs=["image", "text"], seed=first["seed"])
    assert Path(first["image_out"]).read_bytes() == Path(again["image_out"]).read_bytes()
    assert first["text_out"] == again["text_out"] and first["visible"]["text_out"]


def test_several_samples_fill_the_gallery(studio):
    out = generate(studio, text="a blue ball", outputs=["image", "text"], num_samples=2)
    assert [Path(p).name for p in out["samples"]] == ["image.png", "image_1.png"] and out["visible"]["samples"]
    assert out["text_out"].startswith("1. ") and "\n2. " in out["text_out"]
    assert out["params"]["params"]["num_samples"] == 2


def test_user_errors_are_messages_not_tracebacks(studio, tmp_path):
    with pytest.raises(gr.Error, match="at least one output"):
        generate(studio, text="x", outputs=[])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(gr.Error, match="cannot read image"):
        generate(studio, image=str(broken))
    with pytest.raises(gr.Error, match="weights are 0"):
        generate(studio, text="x", text_weight=0.0)
    with pytest.raises(gr.Error, match="Generate something first"):
        studio.save(None, "")


def test_cancel_stops_between_steps(engine):
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            engine.request_stop("session-a")

    before = set(engine.runs_dir.iterdir())
    with pytest.raises(Cancelled):
        engine.run(GenerationRequest(text="a red circle", steps=10, seed=1), progress, session="session-a")
    assert seen == [1, 2] and set(engine.runs_dir.iterdir()) == before  # stopped at step 3, nothing written
    assert not engine.request_stop("session-a")  # nothing left running


def test_progress_names_what_loads_and_times_only_the_steps():
    """The bar during a generation of the released model: its parts loading by name and size, then the time left
    from the steps after the first (a 9 s load before step 1 is not sampling: 1 s per step, 48 steps left)."""
    shown, now = [], [0.0]
    status = RunProgress(lambda where, desc, unit="steps": shown.append((where, desc)), clock=lambda: now[0])
    status.loading("unet_image", 3_550_000_000)
    now[0] = 10.0
    status.step(1, 50)
    now[0] = 11.0
    status.step(2, 50)
    now[0] = 59.0
    status.step(49, 50)
    status.step(50, 50)
    status.loading("image_decoder", 96_000_000)
    assert shown == [
        (0, "Encoding inputs"),
        (0, "Loading the image and video UNet (3.5 GB)"),
        ((1, 50), "Denoising"),
        ((2, 50), "Denoising · about 48 s left"),
        ((49, 50), "Denoising · about 1 s left"),
        ((50, 50), "Decoding"),
        ((50, 50), "Loading the image VAE decoder (96.0 MB)"),
    ]
    now[0] = 159.0
    status.step(3, 50)  # (159 - 10) / 2 s a step: minutes
    assert shown[-1] == ((3, 50), "Denoising · about 58 min left")


def test_recording_roundtrip_regenerates_identically(studio):
    out = generate(studio, text="a circle", audio=asset("text-audio-to-image/audio.wav"), audio_weight=0.5,
                   image=asset("image-to-text/image.png"), outputs=["image", "text"], seed=5)  # fmt: skip
    status, gallery, ids = studio.save(out["run_folder"], "circle and tone")
    assert "Saved" in status and len(gallery) == len(ids) == 1
    rec = list_recordings(studio.recordings_dir)[0]
    assert rec.title == "circle and tone" and rec.thumbnail.exists()
    assert {p.name for p in (rec.folder / "inputs").iterdir()} == {"image.png", "audio.wav"}
    assert not [p for p in studio.recordings_dir.iterdir() if p.name.startswith(".")]  # no temporary left
    detail = dict(zip(DETAIL_FIELDS, studio.select_recording(ids, select(0))))
    assert detail["selected"] == rec.id and "circle and tone" in detail["detail"]
    *form, tab = studio.reload(rec.id)
    values = dict(zip(FORM_FIELDS, form))
    assert values["seed"] == 5 and values["randomize_seed"] is False and values["audio_weight"] == 0.5
    assert Path(values["audio"]).read_bytes() == Path(asset("text-audio-to-image/audio.wav")).read_bytes()
    again = generate(studio, **values)
    assert Path(again["image_out"]).read_bytes() == rec.output("image").read_bytes()
    assert again["text_out"] == rec.text


def test_export_recording_as_example(studio):
    out = generate(studio, text="a yellow box", image=asset("image-to-audio/image.png"), outputs=["audio"], seed=3)
    studio.save(out["run_folder"], "")
    rec = list_recordings(studio.recordings_dir)[0]
    status = studio.export(rec.id, "My yellow box")
    assert "Exported" in status and "restarts" in status
    example = load_examples(studio.examples_path)[-1]
    assert example.request.text == "a yellow box" and example.request.seed == 3 and Path(example.request.image).exists()
    assert example.thumbnail.exists() and example.kind == "text + image → audio"
    found, rows = studio.example_rows(studio.examples_path.parent / "cards")
    assert found[-1].id == "my-yellow-box" and Path(rows[-1][0]).exists()  # its captioned card, then the form
    form = dict(zip(FORM_FIELDS, rows[-1][1:]))
    assert form["text"] == "a yellow box" and form["outputs"] == ["audio"] and form["steps"] == STEPS
    assert form["seed"] == 3 and form["randomize_seed"] is False


def test_export_never_replaces_an_example_and_reload_stays_in_the_recording(studio):
    out = generate(studio, text="a red circle", seed=4)
    studio.save(out["run_folder"], "twice")
    rec = list_recordings(studio.recordings_dir)[0]
    studio.export(rec.id, "Same title")
    studio.export(rec.id, "Same title")
    ids = [e.id for e in load_examples(studio.examples_path)]
    assert ids[-2:] == ["same-title", "same-title-2"] and len(ids) == len(set(ids))
    request = json.loads((rec.folder / "request.json").read_text())
    (rec.folder / "request.json").write_text(json.dumps(request | {"image": "../../../../etc/hostname"}))
    with pytest.raises(gr.Error, match="outside the folder"):
        studio.reload(rec.id)


def test_delete_and_failed_save_leave_nothing_behind(studio, engine, monkeypatch):
    out = generate(studio, text="a red circle")
    rec = save_recording(out["run_folder"], studio.recordings_dir, engine.info)
    delete_recording(studio.recordings_dir, rec.id)
    assert list(studio.recordings_dir.iterdir()) == []

    def broken_card(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("ui.recordings.card_for", broken_card)
    with pytest.raises(OSError):
        save_recording(out["run_folder"], studio.recordings_dir, engine.info)
    assert list(studio.recordings_dir.iterdir()) == []  # the half-written copy was removed


def test_examples_cover_the_papers_combinations_and_run(studio):
    examples = load_examples(DEFAULT_EXAMPLES, "tiny")
    kinds = {("+".join(e.request.inputs()), "+".join(e.request.outputs)) for e in examples}
    assert kinds >= COMBINATIONS
    found, rows = studio.example_rows(studio.examples_path.parent / "cards")
    assert [e.id for e in found] == [e.id for e in examples] and all(Path(row[0]).exists() for row in rows)
    for e in examples:  # every example is a valid request for the tiny model
        form = dict(zip(FORM_FIELDS, request_to_form(e.request, studio.engine.defaults)))
        out = generate(studio, **{**form, "steps": 1})
        assert out["params"]["params"]["outputs"] == e.request.outputs


def test_form_request_mapping():
    request = form_to_request({**BASE, "outputs": "video,audio", "randomize_seed": True, "image": ""})
    assert request.seed is None and request.outputs == ["video", "audio"] and request.image is None
    defaults = {"steps": 9, "guidance": 3.0, "sampler": "dpm", "coupling": "official", "text_temperature": 0.7}
    defaults["partner_weight"] = 4.0
    back = dict(zip(FORM_FIELDS, request_to_form(request, defaults)))
    assert back["randomize_seed"] is True and back["steps"] == STEPS and back["outputs"] == ["video", "audio"]
    assert back["text_temperature"] == (request.text_temperature if request.text_temperature is not None else 0.7)
    assert back["partner_weight"] == 4.0  # the model's default fills the slider
    cold = form_to_request({**BASE, "text_temperature": 0.25, "partner_weight": 2.5})
    assert cold.pipeline_kwargs()["text_temperature"] == 0.25 and cold.pipeline_kwargs()["partner_weight"] == 2.5
    assert dict(zip(FORM_FIELDS, request_to_form(cold, defaults)))["partner_weight"] == 2.5


def test_banner_says_which_model_and_problems(engine, tmp_path):
    html = banner_html(engine.info)
    assert "Model: tiny" in html and engine.info.device in html
    assert ("RANDOM WEIGHTS" in html) == engine.info.random_weights
    missing = Engine.load("official", runs_dir=tmp_path, cache_dir=str(tmp_path / "hf"))
    assert missing.pipe is None and "hf download ZinengTang/CoDi" in missing.info.problem
    assert "not loaded" in banner_html(missing.info) and "hf download" in banner_html(missing.info)
    assert missing.info.dtype == "float32"  # an explicit dtype is shown as asked
    auto = Engine.load("official", dtype="auto", runs_dir=tmp_path, cache_dir=str(tmp_path / "hf"))
    assert auto.pipe is None and auto.info.dtype == "bfloat16"  # 'auto' as it will resolve for the big model
    assert 'not loaded</span> <span class="pill">cpu · bfloat16</span>' in banner_html(auto.info)
    assert auto.load_args["dtype"] == "auto"  # the download then loads the way it was asked
    with pytest.raises(gr.Error, match="official CoDi weights"):
        generate(Studio(missing, tmp_path / "rec", DEFAULT_EXAMPLES), text="rain on a tin roof")


def test_app_arguments():
    import app

    args = app.parse_args([])
    assert (args.model, args.host, args.port, args.share) == ("auto", "127.0.0.1", 7860, False)
    assert (args.device, args.dtype) == ("auto", "auto") and app.resolve_device("cpu") == "cpu"
    args = app.parse_args(["--model", "official", "--device", "cuda", "--dtype", "float16", "--port", "9000"])
    assert (args.model, args.device, args.dtype, args.port) == ("official", "cuda", "float16", 9000)


def test_auto_model_choice(tmp_path, monkeypatch) -> None:
    """--model auto: tiny without a GPU; the released model with a (fake) CUDA GPU and its weights cached; tiny
    again with the GPU but no weights and no network. An explicit --model is kept."""
    import huggingface_hub
    import torch

    import app
    from codi.hub import FP16_FOLDER, OFFICIAL_FILES, OFFICIAL_REPO

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert app.parse_args([]).model == "auto"
    model, why = app.choose_model("auto", "auto")
    assert model == "tiny" and "no CUDA GPU" in why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model, why = app.choose_model("auto", "auto")  # conftest sets HF_HUB_OFFLINE: nothing to download from
    assert model == "tiny" and "not cached" in why
    assert app.choose_model("auto", "cpu")[0] == "tiny"  # a GPU the user did not pick
    repo = tmp_path / f"models--{OFFICIAL_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40) / FP16_FOLDER
    snapshot.mkdir(parents=True)
    for name in OFFICIAL_FILES:
        (snapshot / name).write_bytes(b"x")
    model, why = app.choose_model("auto", "auto")
    assert model == "official" and "cached" in why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert app.choose_model("auto", "auto") == ("official", "a ZeroGPU Space and the released weights are cached")
    assert app.choose_model("tiny", "auto") == ("tiny", "chosen with --model tiny")
    monkeypatch.setenv("CODI_MODEL", "official")
    assert app.parse_args([]).model == "official"


def test_the_app_never_downloads_unasked_except_on_a_space(tmp_path, monkeypatch) -> None:
    """Locally `--model official` starts from the cache only (the page offers the 11.6 GB download); a Space,
    whose visitors cannot press such a button for it, downloads while starting."""
    import app
    import ui.app
    from ui import engine as engine_module

    calls = []

    def load(model, **kwargs):
        calls.append(kwargs)
        return Engine(None, engine_module.ModelInfo(model, "not loaded", "", problem="absent"), tmp_path)

    monkeypatch.setattr(engine_module.Engine, "load", staticmethod(load))
    monkeypatch.setattr(ui.app.gr.Blocks, "launch", lambda self, **kwargs: None)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.main(["--model", "official", "--recordings", str(tmp_path / "rec")]) == 0
    monkeypatch.setenv("SPACE_ID", "someone/codi")
    assert app.main(["--model", "official", "--recordings", str(tmp_path / "rec")]) == 0
    assert [c["local_files_only"] for c in calls] == [True, False]
