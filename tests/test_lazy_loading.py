"""Loading the released files as published, lazily per component, and converting them once (fixture sizes)."""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from test_official_loading import build_hub_cache, fixture_config, fixture_official_state

from codi import cli
from codi.hub import OFFICIAL_FILES
from codi.loading import CheckpointKeyError, CorruptCheckpointError
from codi.pipeline import CoDiPipeline, NotEnoughMemoryError
from ui.engine import Cancelled, Engine, GenerationRequest, model_info

EXTRA = {  # tensors of no component, as the released files carry
    "model_ema.decay": torch.tensor(0.9999),
    "cond_stage_model.proj.weight": torch.ones(4, 3),
    "model.diffusion_model.unet_audio.class_embed.weight": torch.ones(5, 2),
}
WTE, LM_HEAD = "optimus.decoder.transformer.wte.weight", "optimus.decoder.lm_head.weight"


def half_state(**changes: torch.Tensor) -> dict[str, torch.Tensor]:
    """The fixture weights stored in float16 like the released fp16 files, plus EXTRA and `changes`."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in fixture_official_state().items()}
    state.pop(LM_HEAD)
    state[LM_HEAD] = state[WTE].clone()  # stored twice, equal, after wte, as in the released encoders file
    return {**state, **EXTRA, **changes}


def write_files(folder: Path, state: dict[str, torch.Tensor], legacy: str | None = OFFICIAL_FILES[2]) -> list[Path]:
    """The four released files in load order (`legacy` in torch's non-zip format)."""
    cache = build_hub_cache(folder, state)
    files = sorted(cache.rglob("*.pth"), key=lambda p: OFFICIAL_FILES.index(p.name))
    for path in files:
        if path.name == legacy:
            torch.save(torch.load(path, weights_only=True), path, _use_new_zipfile_serialization=False)
    return files


def official(files: list[Path], **kwargs) -> CoDiPipeline:
    return CoDiPipeline.from_preset("official", official_files=files, config=fixture_config(), **kwargs)


def is_meta(module: torch.nn.Module) -> bool:
    return all(p.is_meta for p in module.parameters())


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_files(tmp_path_factory.mktemp("hub"), half_state())


def test_a_request_loads_only_its_components(files: list[Path]) -> None:
    pipe = official(files, lazy=True)
    m = pipe.model
    assert is_meta(m) and not pipe.components.resident  # nothing loaded, nothing initialised
    result = pipe(inputs={"text": "a cat"}, outputs=["image"], steps=2, seed=1)
    assert result.model["components_used"] == ["clip_text", "unet_image", "image_decoder"]
    assert result.model["components_loaded"] == ["clip_text", "unet_image", "image_decoder"]
    for unused in (
        m.diffusion.unet_text,
        m.diffusion.unet_audio,
        m.clap,
        m.optimus,
        m.audioldm.vae,
        m.autokl.vae.encoder,
    ):
        assert is_meta(unused)
    assert is_meta(m.clip.model.vision_model) and not is_meta(m.clip.model.text_model)
    keys = result.model["checkpoint_keys"]
    assert keys["skipped_keys"] == 3 and keys["skipped_numel"] == 1 + 12 + 10
    assert sorted(keys["skipped_first"]) == sorted(EXTRA)
    assert result.model["peak_memory"]["bytes"] > 0 and result.model["peak_memory"]["kind"].startswith("process")
    # a later request loads more on demand, and keeps what it already has
    again = pipe(inputs={"image": result.image}, outputs=["text"], steps=2, seed=1)
    assert again.model["components_loaded"] == ["clip_vision", "unet_text", "optimus_decoder"]
    assert set(again.model["components_resident"]) >= {"clip_text", "unet_image", "image_decoder"}


def test_timings_separate_loading_from_sampling(files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """result.timings: `load_s` is the weights read during the call; `sample_s` is the denoising phase without the
    UNet's loading (what a per-step figure divides). Each read is slowed by 0.25 s to make loading measurable."""
    pipe = official(files, lazy=True)
    read = pipe.components.source.read

    def slow_read(*args, **kwargs):
        time.sleep(0.25)
        return read(*args, **kwargs)

    monkeypatch.setattr(pipe.components.source, "read", slow_read)
    first = pipe(inputs={"text": "a cat"}, outputs=["image"], steps=2, seed=1).timings
    assert 0.75 <= first["load_s"] < first["total_s"]  # clip_text, unet_image, image_decoder
    assert first["sample_s"] <= first["denoise_s"] - 0.25  # unet_image loaded as the denoising began
    again = pipe(inputs={"text": "a cat"}, outputs=["image"], steps=2, seed=1).timings
    assert again["load_s"] == 0 and again["sample_s"] == again["denoise_s"]


def test_the_studio_is_told_what_loads_and_a_cancel_stops_before_reading(files: list[Path], tmp_path: Path) -> None:
    """Engine.run's `loading` hears each part of the released model before it is read (name, bytes); a stop asked
    for meanwhile ends the run before the next part is read, with nothing written; the hook is removed after."""
    pipe = official(files, lazy=True)
    engine = Engine(pipe, model_info(pipe, "official", "cpu"), tmp_path / "runs")
    heard: list[tuple[str, int]] = []

    def loading(name: str, size: int) -> None:
        heard.append((name, size))
        engine.request_stop("page")  # pressed while the text encoder is read

    with pytest.raises(Cancelled):
        engine.run(GenerationRequest(text="a cat", outputs=["image"], steps=2), session="page", loading=loading)
    assert heard == [("clip_text", pipe.components.sizes["clip_text"])] and heard[0][1] > 0
    assert not pipe.components.is_resident("unet_image") and not list((tmp_path / "runs").glob("*"))
    assert pipe.components.on_load is None
    heard.clear()
    run = engine.run(GenerationRequest(text="a cat", outputs=["image"], steps=2), loading=lambda *a: heard.append(a))
    assert [n for n, _ in heard] == ["unet_image", "image_decoder"]  # clip_text stayed loaded
    assert run.output("image") is not None and pipe.components.on_load is None


def test_lazy_equals_eager_loading(files: list[Path]) -> None:
    """The same numbers whether components load on first use or all at once (one implementation)."""
    lazy, eager = official(files, lazy=True), official(files, lazy=False)
    assert not is_meta(eager.model)
    request = {"inputs": {"text": "rain"}, "outputs": ["audio", "text"], "steps": 1, "seed": 5}
    a, b = lazy(**request), eager(**request)
    assert a.text == b.text and (a.audio.waveform == b.audio.waveform).all()


def test_max_memory_evicts_the_least_recently_used(files: list[Path]) -> None:
    probe = official(files, lazy=True)
    sizes = probe.components.sizes
    audio = sizes["clip_text"] + sizes["unet_audio"] + sizes["audio_decoder"]
    pipe = official(files, lazy=True, max_memory=(audio + 1) / 1e9)
    first = pipe(inputs={"text": "a"}, outputs=["image"], steps=1, seed=0)
    assert first.model["components_resident"] == ["clip_text", "unet_image", "image_decoder"]
    second = pipe(inputs={"text": "a"}, outputs=["audio"], steps=1, seed=0)
    resident = second.model["components_resident"]
    assert "unet_image" not in resident and "image_decoder" not in resident and "unet_audio" in resident
    assert pipe.components.resident_bytes() <= audio + 1
    assert is_meta(pipe.model.diffusion.unet_image)
    third = pipe(inputs={"text": "a"}, outputs=["image"], steps=1, seed=0)  # loaded again, same picture
    assert "unet_image" in third.model["components_loaded"]
    assert list(third.image.getdata()) == list(first.image.getdata())


def test_unknown_keys_are_fatal_only_when_strict(files: list[Path]) -> None:
    with pytest.raises(CheckpointKeyError, match="model_ema.decay") as err:
        official(files, strict_keys=True)
    assert "cond_stage_model.proj.weight" in str(err.value) and "unet_audio.class_embed" in str(err.value)


def test_the_later_of_two_keys_wins_and_is_reported(tmp_path: Path) -> None:
    """GPT-2's wte and lm_head are one tensor of ours; the released file stores both (lm_head later)."""
    state = half_state()
    state[LM_HEAD] = state[WTE] + 1  # stays the later key
    pipe = official(write_files(tmp_path, state), lazy=False)
    decoder = pipe.model.optimus.decoder
    assert torch.equal(decoder.transformer.wte.weight, state[LM_HEAD].float())
    assert decoder.lm_head.weight is decoder.transformer.wte.weight  # still tied
    overrides = pipe.components.source.report.to_json()["overrides"]
    assert {"ours": "optimus.decoder.transformer.wte.weight", "kept": LM_HEAD, "dropped": WTE, "equal": False} in (
        overrides
    )


def test_missing_and_misshapen_keys_stay_errors(tmp_path: Path) -> None:
    state = half_state()
    del state["model.diffusion_model.unet_text.out.0.weight"]
    state["clip.model.text_projection.weight"] = torch.zeros(3, 3, dtype=torch.float16)
    with pytest.raises(CheckpointKeyError) as err:
        official(write_files(tmp_path, state))
    assert "diffusion.unet_text.out.0.weight" in str(err.value)
    assert "clip.model.text_projection.weight: file (3, 3)" in str(err.value)


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    files = write_files(tmp_path, half_state(), legacy=None)
    files[3].write_bytes(files[3].read_bytes()[:5000])
    with pytest.raises(CorruptCheckpointError, match="CoDi_video_diffuser_8frames.pth.*download it again"):
        official(files)
    assert cli.main(["convert", *map(str, files), "--out", str(tmp_path / "x")]) == 3


def test_convert_round_trips(files: list[Path], tmp_path: Path) -> None:
    """Converting (what `python -m codi convert` runs) writes config.json + one safetensors per component; the
    folder generates the same outputs as the .pth files (fp16 values stored as fp16)."""
    out = tmp_path / "converted"
    source = official(files, lazy=True)
    source.save_pretrained(out, dtype="float16")
    assert not source.components.resident  # converted one component at a time, nothing kept
    names = sorted(p.name for p in out.iterdir())
    assert "config.json" in names and "unet_image.safetensors" in names and "clip_vision.safetensors" in names
    assert len([n for n in names if n.endswith(".safetensors")]) == 12
    request = {"inputs": {"text": "waves"}, "outputs": ["image", "text"], "steps": 1, "seed": 9}
    a = source(**request)
    folder = CoDiPipeline.from_pretrained(out)
    b = folder(**request)
    assert a.text == b.text and list(a.image.getdata()) == list(b.image.getdata())
    assert "checkpoint_keys" not in b.model or b.model["checkpoint_keys"]["skipped_keys"] == 0
    resaved = tmp_path / "resaved"
    folder.save_pretrained(resaved)  # loads what is missing one component at a time
    assert sorted(p.name for p in resaved.iterdir()) == names


def test_convert_command_arguments(files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["convert", "--out", str(tmp_path)]) == 2  # neither files nor --from-cache
    assert cli.main(["convert", str(tmp_path / "nope.pth"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    # the released config does not fit the fixture-size files: refused with the keys named, nothing written
    assert cli.main(["convert", *map(str, files), "--out", str(tmp_path / "out")]) == 2
    assert "shape mismatches" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_out_of_memory_names_the_remedy_and_the_next_request_works(files: list[Path]) -> None:
    pipe = official(files, lazy=True)
    unet = pipe.model.diffusion.unet_image
    forward = unet.forward

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    unet.forward = exhausted
    with pytest.raises(NotEnoughMemoryError, match="--offload model"):
        pipe(inputs={"text": "a"}, outputs=["image"], steps=1, seed=0)
    unet.forward = forward
    assert pipe(inputs={"text": "a"}, outputs=["image"], steps=1, seed=0).image is not None


def test_legacy_pickles_are_read_without_mmap(tmp_path: Path) -> None:
    from codi.loading import is_legacy_pickle, read_tensor_file

    path = tmp_path / "old.pth"
    torch.save(OrderedDict(a=torch.arange(3)), path, _use_new_zipfile_serialization=False)
    assert is_legacy_pickle(path) and torch.equal(read_tensor_file(path)["a"], torch.arange(3))


def test_model_offload_gives_the_same_outputs(files: list[Path]) -> None:
    """Offload keeps each part on the CPU between its stages (on a CPU-only machine the moves are no-ops, so this
    checks the bookkeeping: same outputs, parts resident, nothing left on meta)."""
    request = {"inputs": {"text": "a"}, "outputs": ["image"], "steps": 1, "seed": 3}
    plain, offloaded = official(files, lazy=True), official(files, lazy=True, offload="model")
    a, b = plain(**request), offloaded(**request)
    assert list(a.image.getdata()) == list(b.image.getdata()) and b.model["offload"] == "model"
    assert all(p.device.type == "cpu" for p in offloaded.model.diffusion.unet_image.parameters())
    with pytest.raises(ValueError, match="offload must be one of"):
        official(files, offload="disk")


def test_download_command_fetches_then_converts_when_asked(
    files: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from codi import hub

    calls = []

    def fake_download(precision: str, revision: str | None = None) -> hub.OfficialWeights:
        calls.append((precision, revision))
        return hub.OfficialWeights(files=tuple(files), variant=precision)

    monkeypatch.setattr(hub, "download_official", fake_download)
    assert cli.main(["download", "--precision", "fp16"]) == 0
    assert calls == [("fp16", None)] and capsys.readouterr().out.split() == [str(f) for f in files]
    monkeypatch.setattr(cli, "convert", lambda *args: calls.append(args) or 0)
    assert cli.main(["download", "--out", "somewhere"]) == 0
    assert calls[-1] == ([str(f) for f in files], "somewhere", False, "fp16", "float16")


def test_a_hub_repository_holding_a_converted_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`from_pretrained("owner/name")` / `--model owner/name` resolve through the Hugging Face cache (offline here);
    an uncached repository gives one message."""
    import huggingface_hub

    from codi.hub import WeightsNotFoundError
    from codi.model import CoDiModel
    from codi.tiny import tiny_config

    commit = "1" * 40
    repo = tmp_path / "models--me--codi-small"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    torch.manual_seed(0)
    model = CoDiModel(tiny_config())
    CoDiPipeline(model).save_pretrained(repo / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    pipe = CoDiPipeline.from_pretrained("me/codi-small")
    assert pipe.config.name == model.config.name
    assert torch.equal(pipe.model.diffusion.unet_image.out[2].weight, model.diffusion.unet_image.out[2].weight)
    with pytest.raises(WeightsNotFoundError, match="me/elsewhere.*not cached"):
        CoDiPipeline.from_pretrained("me/elsewhere")
