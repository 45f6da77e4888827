"""The full-size rehearsal writer (codi/rehearsal.py), run on a small synthetic key table: cache layout, formats,
values, reuse and recovery."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from conftest import parity_dir

from codi import rehearsal
from codi.hub import FP16_FOLDER, OFFICIAL_FILES, OFFICIAL_REPO, fetch_official
from codi.rehearsal import EXTRA_KEYS, EXTRA_TENSORS, ensure_rehearsal_cache

ROWS: list[rehearsal.KeyRow] = [
    ("betas", (10,), "float32"),
    ("clip.model.logit_scale", (), "float32"),
    ("clip.model.text_model.embeddings.position_ids", (1, 7), "int64"),
    ("clap.model.audio_branch.layers.0.blocks.0.attn.relative_position_index", (16, 16), "int64"),
    ("clap.model.audio_branch.layers.0.blocks.1.attn_mask", (4, 16, 16), "float32"),
    ("optimus.decoder.transformer.wte.weight", (50, 8), "float32"),
    ("optimus.decoder.transformer.h.0.attn.bias", (1, 1, 6, 6), "float32"),
    ("optimus.decoder.lm_head.weight", (50, 8), "float32"),
    ("model.diffusion_model.unet_text.out.0.weight", (8,), "float32"),
    ("model.diffusion_model.unet_audio.out.2.weight", (4, 8, 3, 3), "float32"),
    ("model.diffusion_model.unet_image.out.2.bias", (4,), "float32"),
]
SMALL_EXTRAS = {
    name: tuple(dataclasses.replace(e, shape=tuple(min(d, 3) for d in e.shape)) for e in extras)
    for name, extras in EXTRA_TENSORS.items()
}


def write_small(root: Path, **options) -> Path:
    return ensure_rehearsal_cache(root, rows=ROWS, extras=SMALL_EXTRAS, **options)


def load_all(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    """file name -> its state dict, resolved offline through huggingface_hub as the real loader does."""
    from huggingface_hub import hf_hub_download

    files = {}
    for name in OFFICIAL_FILES:
        path = hf_hub_download(OFFICIAL_REPO, f"{FP16_FOLDER}/{name}", cache_dir=root, local_files_only=True)
        files[name] = torch.load(path, map_location="cpu", weights_only=True)
    return files


def test_cache_resolves_offline_as_a_real_hub_cache(tmp_path: Path) -> None:
    root = write_small(tmp_path / "hub")
    weights = fetch_official("fp16", cache_dir=root, local_files_only=True)
    assert [p.name for p in weights.files] == list(OFFICIAL_FILES)
    for path in weights.files:  # snapshot entries are relative symlinks into blobs/, like huggingface_hub's
        assert path.is_symlink() and not Path(path.readlink()).is_absolute()
        assert path.resolve().parent.name == "blobs"
    files = load_all(root)
    assert all(type(state).__name__ == "OrderedDict" for state in files.values())


def test_keys_are_split_and_typed_as_the_released_files(tmp_path: Path) -> None:
    files = load_all(write_small(tmp_path / "hub"))
    encoders, text, audio, video = (files[n] for n in OFFICIAL_FILES)
    assert not any(k.startswith("model.diffusion_model.") for k in encoders)
    assert all(k.startswith("model.diffusion_model.unet_text.") for k in text)
    assert "model.diffusion_model.unet_audio.out.2.weight" in audio and "cond_stage_model." in " ".join(audio)
    assert "model.diffusion_model.unet_image.out.2.bias" in video
    written = {k for state in files.values() for k in state}
    assert written == {k for k, _, _ in ROWS} | set(EXTRA_KEYS)
    for state in files.values():
        for key, value in state.items():
            assert value.dtype in (torch.float16, torch.int64), key
    assert encoders["clip.model.text_model.embeddings.position_ids"].dtype == torch.int64


def test_index_and_mask_buffers_hold_real_values(tmp_path: Path) -> None:
    encoders = load_all(write_small(tmp_path / "hub"))[OFFICIAL_FILES[0]]
    assert torch.equal(encoders["clip.model.text_model.embeddings.position_ids"], torch.arange(7)[None])
    index = encoders["clap.model.audio_branch.layers.0.blocks.0.attn.relative_position_index"]
    assert index.min() == 0 and index.max() == (2 * 4 - 1) ** 2 - 1 and index.diagonal().unique().numel() == 1
    assert torch.equal(encoders["optimus.decoder.transformer.h.0.attn.bias"][0, 0], torch.ones(6, 6).tril().half())
    assert set(encoders["clap.model.audio_branch.layers.0.blocks.1.attn_mask"].unique().tolist()) == {-100.0, 0.0}
    assert torch.all(encoders["betas"].diff() > 0)
    assert math.isclose(encoders["clip.model.logit_scale"].item(), math.log(100), abs_tol=0.01)


def test_lm_head_equals_wte_unless_asked_to_differ(tmp_path: Path) -> None:
    tied = load_all(write_small(tmp_path / "tied"))[OFFICIAL_FILES[0]]
    assert torch.equal(tied["optimus.decoder.lm_head.weight"], tied["optimus.decoder.transformer.wte.weight"])
    apart = load_all(write_small(tmp_path / "apart", differ_lm_head=True))[OFFICIAL_FILES[0]]
    assert not torch.equal(apart["optimus.decoder.lm_head.weight"], apart["optimus.decoder.transformer.wte.weight"])
    assert torch.equal(apart["optimus.decoder.transformer.wte.weight"], tied["optimus.decoder.transformer.wte.weight"])


def test_audio_file_is_legacy_format_and_the_others_are_zip(tmp_path: Path) -> None:
    weights = fetch_official("fp16", cache_dir=write_small(tmp_path / "hub"), local_files_only=True)
    for path in weights.files:
        if path.name == "CoDi_audio_diffuser_m.pth":
            with pytest.raises(RuntimeError):
                torch.load(path, weights_only=True, mmap=True)
            assert torch.load(path, weights_only=True)
        else:
            assert torch.load(path, weights_only=True, mmap=True)


def test_a_complete_cache_is_reused_without_rewriting(tmp_path: Path) -> None:
    root = write_small(tmp_path / "hub")
    blobs = sorted((rehearsal.repo_folder(root) / "blobs").iterdir())
    before = [p.stat().st_mtime_ns for p in blobs]
    assert write_small(tmp_path / "hub") == root
    assert [p.stat().st_mtime_ns for p in blobs] == before


def test_an_interrupted_write_is_redone(tmp_path: Path) -> None:
    root = write_small(tmp_path / "hub")
    repo = rehearsal.repo_folder(root)
    reference = load_all(root)
    (repo / rehearsal.MARKER_NAME).unlink()  # as if killed before the marker: started flag present, a file torn
    (repo / rehearsal.STARTED_NAME).write_text("1\n")
    blob = sorted((repo / "blobs").iterdir())[0]
    blob.write_bytes(blob.read_bytes()[:100])
    assert rehearsal.read_marker(root) is None
    write_small(tmp_path / "hub")
    assert rehearsal.read_marker(root) is not None and not (repo / rehearsal.STARTED_NAME).exists()
    redone = load_all(root)
    for name, state in reference.items():
        assert all(torch.equal(v, redone[name][k]) for k, v in state.items())


def test_a_cache_that_is_not_a_rehearsal_is_never_touched(tmp_path: Path) -> None:
    real = rehearsal.repo_folder(tmp_path) / "blobs"
    real.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a rehearsal cache"):
        write_small(tmp_path)
    assert real.exists()


def test_default_root_follows_the_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODI_REHEARSAL_DIR", raising=False)
    a = rehearsal.default_root(rehearsal.fingerprint(ROWS, 0, False, SMALL_EXTRAS))
    b = rehearsal.default_root(rehearsal.fingerprint(ROWS, 0, True, SMALL_EXTRAS))
    assert a != b and a.parent == b.parent and a.parent.name == "codi-rehearsal"
    monkeypatch.setenv("CODI_REHEARSAL_DIR", str(tmp_path / "here"))
    assert rehearsal.default_root("0" * 64) == tmp_path / "here"


def test_the_full_table_splits_into_four_files_with_the_extras() -> None:
    rows = rehearsal.read_key_table(parity_dir() / rehearsal.KEY_TABLE_NAME)
    assert len(rows) == 6109 and not set(EXTRA_KEYS) & {k for k, _, _ in rows}
    parts = rehearsal.split_rows(rows)
    numel = {name: sum(math.prod(s) for _, s, _ in part) for name, part in parts.items()}
    audio_extras = sum(math.prod(e.shape) for e in EXTRA_TENSORS[OFFICIAL_FILES[2]])
    assert numel[OFFICIAL_FILES[2]] == 431_309_032 + audio_extras and 22.4e6 <= audio_extras <= 22.6e6
    assert numel[OFFICIAL_FILES[1]] == 2_048_385_408


def test_exact_buffers_equal_the_official_fixtures() -> None:
    from safetensors.torch import load_file

    folder = parity_dir()
    fixtures = {**load_file(str(folder / "clap.safetensors")), **load_file(str(folder / "ddim_sampler.safetensors"))}
    checked = 0
    for key, value in fixtures.items():
        if key.endswith(("attn_mask", "relative_position_index")) or key in rehearsal.SCHEDULE_BUFFERS:
            mine = rehearsal.make_tensor(key, tuple(value.shape), "int64" if key.endswith("index") else "float32")
            torch.testing.assert_close(mine.to(value.dtype), value, rtol=1e-3, atol=1e-6)
            checked += 1
    assert checked >= 12


def test_missing_key_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="official key table not found"):
        rehearsal.read_key_table(tmp_path / "nope.tsv")
