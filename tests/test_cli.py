"""`python -m codi generate`: single requests, JSONL batches, media files in and out."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from codi import cli
from codi.cli import main
from codi.media import AudioClip, VideoClip, read_audio, read_video, write_audio, write_video
from codi.model import CoDiModel
from codi.presets import save_folder
from codi.residency import ComponentManager
from codi.tiny import tiny_config
from codi.world import render_audio, render_image, render_video, sample_scene

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A checkpoint folder (our format) holding a random tiny model."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    save_folder(CoDiModel(tiny_config()), folder)
    return folder


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """World media as files: png, mp4 with an audio track, stereo 44.1 kHz flac, ogg."""
    folder = tmp_path_factory.mktemp("media")
    scene = sample_scene(np.random.default_rng(0), color="green", shape="triangle", motion="up")
    Image.fromarray(render_image(scene)).save(folder / "in.png")
    wave = render_audio(scene)
    write_video(VideoClip(render_video(scene), fps=8.0), folder / "in.mp4", audio=AudioClip(wave, 16000))
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32)
    sf.write(folder / "in.flac", stereo, 44100)
    sf.write(folder / "in.ogg", stereo, 44100)
    return {
        "image": folder / "in.png",
        "video": folder / "in.mp4",
        "flac": folder / "in.flac",
        "ogg": folder / "in.ogg",
    }


def test_generate_all_outputs(model_dir: Path, media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--model",
            str(model_dir),
            "--text",
            "a green wedge rising",
            "--image",
            str(media["image"]),
            "--weight",
            "text=2",
            "--weight",
            "image=0.5",
            "--outputs",
            "image,video,audio,text",
            "--seed",
            "4",
            "--steps",
            "3",
            "--guidance",
            "1.5",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["audio.wav", "image.png", "result.json", "text.txt", "video.mp4"]
    meta = json.loads((out / "result.json").read_text())
    assert meta["seed"] == 4 and meta["params"]["steps"] == 3 and meta["params"]["guidance_scale"] == 1.5
    assert meta["params"]["weights"] == [["text", 2.0], ["image", 0.5]]
    assert meta["model"]["dtype"] == "float32"  # --dtype auto: a small model stays in float32
    assert {"torch", "transformers", "diffusers"} <= set(meta["versions"]) and meta["timings"]["total_s"] > 0
    clip = read_video(out / "video.mp4")
    assert clip.frames.shape[1:] == (64, 64, 3) and clip.audio is not None  # generated audio muxed in
    assert abs(clip.seconds - 1.0) < 0.2
    wav, rate = sf.read(out / "audio.wav")
    assert rate == 16000 and len(wav) == 15360
    assert Image.open(out / "image.png").size == (64, 64)


def test_media_inputs_any_rate_and_format(model_dir: Path, media: dict[str, Path], tmp_path: Path) -> None:
    flac = read_audio(media["flac"])
    assert flac.sample_rate == 44100 and flac.waveform.ndim == 1  # stereo mixed down
    assert abs(np.abs(flac.waveform).max() - 0.75) < 0.01
    video = read_video(media["video"])
    assert video.frames.shape == (8, 64, 64, 3) and video.audio is not None and video.audio.sample_rate == 16000
    for key in ("video", "ogg"):
        flag = "--video" if key == "video" else "--audio"
        code = main(
            [
                "generate",
                "--model",
                str(model_dir),
                flag,
                str(media[key]),
                "--outputs",
                "text",
                "--steps",
                "1",
                "--out",
                str(tmp_path / key),
                "--quiet",
            ]
        )
        assert code == 0 and (tmp_path / key / "text.txt").exists()


def test_batch_loads_model_once_and_writes_per_id(model_dir: Path, media: dict[str, Path], tmp_path: Path) -> None:
    batch = tmp_path / "requests.jsonl"
    lines = [
        {"id": "first", "text": "a red ball", "outputs": "image,text", "seed": 1, "steps": 2, "text_temperature": 0.5},
        {
            "id": "second",
            "audio": str(media["flac"]),
            "image": str(media["image"]),
            "weights": {"audio": 2},
            "outputs": "audio,video",
            "seed": 2,
            "steps": 2,
            "sampler": "dpm",
            "guidance": 1.0,
            "partner_weight": 2.0,
        },
    ]
    batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert (
        main(["generate", "--model", str(model_dir), "--batch", str(batch), "--out", str(tmp_path / "o"), "--quiet"])
        == 0
    )
    assert (tmp_path / "o" / "first" / "image.png").exists()
    second = json.loads((tmp_path / "o" / "second" / "result.json").read_text())
    assert second["params"]["sampler"] == "dpm" and second["outputs"] == ["audio.wav", "video.mp4"]
    assert second["params"]["partner_weight"] == 2.0
    first = json.loads((tmp_path / "o" / "first" / "result.json").read_text())
    assert first["params"]["text_temperature"] == 0.5


def test_a_failing_batch_line_is_recorded_and_the_rest_runs(model_dir: Path, tmp_path: Path, capsys) -> None:
    batch = tmp_path / "requests.jsonl"
    lines = [
        {"id": "ok-1", "text": "a red ball", "outputs": "image", "seed": 1, "steps": 2},
        {"id": "broken", "image": str(tmp_path / "missing.png"), "outputs": "text", "steps": 2},
        {"id": "ok-2", "text": "a blue box", "outputs": "text", "seed": 2, "steps": 2},
    ]
    batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "o"
    assert main(["generate", "--model", str(model_dir), "--batch", str(batch), "--out", str(out), "--quiet"]) == 2
    assert (out / "ok-1" / "image.png").exists() and (out / "ok-2" / "text.txt").exists()  # it went on
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["broken"] and "missing.png" in errors[0]["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 1 and [r["id"] for r in summary["results"]] == ["broken", "ok-1", "ok-2"]
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "line 1's: each request needs its own"),
        ([{"id": "../../etc", "text": "x"}], "must be 1-64 ASCII letters"),
        ([{"id": "x" * 65, "text": "x"}], "must be 1-64 ASCII letters"),
        ([{"text": "x", "steps": "20"}], "steps must be int, got str"),
        ([{"text": "x", "seed": True}], "seed must be int, got bool"),
        ([{"text": "x", "weights": [1, 2]}], "weights must be dict, got list"),
    ],
)
def test_bad_batches_are_refused_before_anything_runs(tmp_path: Path, capsys, lines, message) -> None:
    batch = tmp_path / "requests.jsonl"
    batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert main(["generate", "--model", "tiny", "--batch", str(batch), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "/nope.png", "--outputs", "text"], "cannot read image"),
        (["--text", "a", "--weight", "text", "--outputs", "image"], "MODALITY=W"),
        (["--text", "a", "--outputs", "image,smell"], "unknown modality"),
        (["--text", "a", "--device", "cuda"], "no CUDA GPU is available"),
        (["--text", "a", "--outputs", ""], "choose at least one output"),
        (["--text", "a", "--num-samples", "0"], "number of samples must be between 1 and 16, got 0"),
        (["--text", "a", "--device", "tpu9"], "unknown device 'tpu9'"),
    ],
)
def test_errors_are_messages_not_tracebacks(model_dir: Path, tmp_path: Path, capsys, args, message) -> None:
    assert main(["generate", "--model", str(model_dir), *args, "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_module_entry_point_runs(model_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "codi",
            "generate",
            "--model",
            str(model_dir),
            "--text",
            "a box",
            "--outputs",
            "audio",
            "--steps",
            "1",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert read_audio(tmp_path / "audio.wav").sample_rate == 16000
    write_audio(AudioClip(np.zeros(10, np.float32), 8000), tmp_path / "x.wav")


def test_eval_refuses_unknown_tasks_before_loading(capsys) -> None:
    assert main(["eval", "--model", "/no/such/model", "--tasks", "text->image,text->smell", "--json", ""]) == 2
    err = capsys.readouterr().err
    assert "text->smell" in err and "audio->image" in err and "Traceback" not in err


@pytest.mark.parametrize("setting", [None, "0"])
def test_importing_codi_first_puts_big_cpu_tensors_on_huge_pages(setting: str | None) -> None:
    """`import codi` before torch turns on torch's transparent-huge-page allocations (fewer page faults per UNet
    step) unless the caller set THP_MEM_ALLOC_ENABLE; a 64 MB tensor then sits on huge pages where Linux offers them."""
    probe = (
        "import os, codi, torch\n"
        "x = torch.ones(16 * 2**20)\n"
        "rollup = open('/proc/self/smaps_rollup').read() if os.path.exists('/proc/self/smaps_rollup') else ''\n"
        "huge = [int(l.split()[1]) for l in rollup.splitlines() if l.startswith('AnonHugePages')]\n"
        "print(os.environ['THP_MEM_ALLOC_ENABLE'], huge[0] if huge else -1)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    value, huge_kb = out.stdout.split()
    assert value == (setting or "1")
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" not in thp.read_text() and int(huge_kb) >= 0:
        assert (int(huge_kb) >= 32 * 1024) == (setting is None)  # most of the 64 MB, or none of it


def test_the_progress_bar_keeps_log_lines_apart_and_times_only_steps(capsys) -> None:
    """While a part of the model is read the bar names it; the 'loaded ...' line then clears the bar and ends on its
    own line, and the console handler and the hook are the plain ones again afterwards. The bar's rate (so its time
    left) starts at the first step."""
    handler = logging.StreamHandler(sys.stderr)  # what basicConfig gives the CLI, on the captured stderr
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        update, bar = cli._progress_bar(False, "generate")
        components = ComponentManager(torch.nn.Module(), None)  # what _console hooks: the pipeline's (here empty)
        with cli._console(bar, components):
            components.on_load("unet_image", 3_550_000_000)
            assert bar.desc == "generate: loading the image and video UNet (3.5 GB)"
            logging.getLogger("codi.residency").warning("loaded unet_image (3.55 GB) in 1.9 s")
            update(1, 4)
            assert bar.desc == "generate"  # sampling: the bar's own label again
        bar.close()
        assert handler in root.handlers and components.on_load is None
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert "\rloaded unet_image (3.55 GB) in 1.9 s\n" in err  # not appended to "generate:  25%|..."
    update, bar = cli._progress_bar(False, "generate")
    time.sleep(0.3)  # encoding and loading: not a step
    update(1, 50)
    update(2, 50)
    meter = bar.format_dict
    assert meter["initial"] == 1 and meter["elapsed"] < 0.25  # the rate counts the steps after the first only
    bar.close()
    assert cli._progress_bar(True, "generate") == (None, None)
