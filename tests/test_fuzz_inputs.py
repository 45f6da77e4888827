"""Generated and hostile inputs to the engine, the CLI, the JSONL batch runner and the Studio's generate handler
(issue 20, item 7).

The property everywhere: a call succeeds with well-formed outputs, or it is refused with the project's own error
and a message (InputError or MediaError from the engine; `error: ...` and exit code 2 or 3 from the CLI, or a
usage error from argparse; a gr.Error from the UI handler), never a TypeError, ValueError, OSError, RuntimeError ...
traceback. Hypothesis runs derandomized (the same examples on every run, like the seeded tests) with few examples per
test, on the tiny model at 1-3 steps; most examples are refused before any model call.

The 18 classes of bugs this file found (a seed, guidance or sample rate of the wrong type or range, an int past float
range, NaN from the API, ragged audio, paths the OS refuses, unknown devices, a batch line aborting the batch, ...)
are fixed; a minimal reproducer of each stays at the end as a regression test.
`pytest -s` prints what each property test tried.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from itertools import count
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from test_media_robustness import _encode, _ffmpeg, _quadrant_frame
from test_pipeline import check_result

from codi import cli
from codi.conditions import InputError
from codi.media import AudioClip, MediaError, VideoClip
from codi.modality import Modality
from codi.pipeline import CoDiPipeline, parse_outputs
from ui.app import create_demo
from ui.engine import Engine, model_info
from ui.handlers import FORM_FIELDS, RESULT_FIELDS, Studio

# Hypothesis' caches (the example database is off) go to the temporary folder, not into the repository.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "codi-studio-hypothesis"))

MODALITIES = ("text", "image", "video", "audio")
CLEAN = (InputError, MediaError)  # the engine's own refusals (both ValueError subclasses: checked first)
TALLY: defaultdict[str, Counter] = defaultdict(Counter)  # per property test: what its examples came to


def floats(*args: Any, **kwargs: Any) -> st.SearchStrategy[float]:
    """st.floats without subnormals: the CPU flushes them to zero here (torch.set_flush_denormal, conftest.py)."""
    return st.floats(*args, allow_subnormal=False, **kwargs)


def fuzz(examples: int) -> settings:
    """Few examples, no deadline (a generation takes 0.02-0.5 s), the same examples on every run."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module", autouse=True)
def report_tally():
    yield
    for test, counts in TALLY.items():
        print(f"\n[fuzz] {test}: {sum(counts.values())} examples: {dict(sorted(counts.items()))}")


@pytest.fixture(scope="module")
def pipe() -> Iterator[CoDiPipeline]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is fastest on one thread
    yield CoDiPipeline.from_preset("tiny")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


_fresh = count()


def fresh(work: Path, name: str) -> Path:
    """A new folder name under `work` for one example (tmp_path is per test, not per example)."""
    return work / f"{name}-{next(_fresh)}"


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def run_clean(pipe: CoDiPipeline, tally: Counter | None = None, **kwargs: Any) -> Any:
    """The behaviour every input must have: a result with well-formed outputs, or InputError / MediaError with a
    message. Returns the result, or None when refused."""
    kw = {"outputs": "image", "steps": 1, "seed": 0, **kwargs}
    try:
        result = pipe(**kw)
    except CLEAN as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        if tally is not None:
            tally["refused"] += 1
        return None
    outputs = parse_outputs(kw["outputs"])
    check_result(pipe, result, outputs)  # tests/test_pipeline.py: sizes, dtypes, finite audio in [-1, 1]
    n = result.params["num_samples"]
    lists = {Modality.TEXT: result.texts, Modality.IMAGE: result.images}
    lists |= {Modality.VIDEO: result.videos, Modality.AUDIO: result.audios}
    assert all(len(lists[m]) == n for m in outputs)
    if tally is not None:
        tally["ok"] += 1
    return result


def _slow_steps(value: Any) -> bool:
    """Whole steps from 4 to 1000 would run that many UNet calls: kept out of the fuzz (test_pipeline runs them)."""
    try:
        f = float(value)
    except Exception:
        return False
    return 3 < f <= 1000


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(),
    st.just(10**400),
    floats(),
    st.text(max_size=6),
    st.sampled_from(["2", " 1 ", "nan", "1e400", "0x10"]),
    st.complex_numbers(max_magnitude=10, allow_subnormal=False),
    st.lists(st.integers(-2, 2), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.sampled_from([np.float32(1.5), np.int64(2), np.uint64(2**64 - 1), np.float64("nan")]),
    st.binary(max_size=3),
)


@st.composite
def mostly_valid(
    draw,
    valid: Mapping[str, st.SearchStrategy],
    wild: Mapping[str, st.SearchStrategy],
    optional: bool = False,
    max_wild: int = 3,
) -> dict[str, Any]:
    """Valid values for every key of `valid` (or for some, when `optional`), then up to `max_wild` keys set wild:
    each example aims at a few fields at a time, so that refusals name what they refuse and valid calls run."""
    keys = sorted(valid)
    if optional:
        keys = draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)))
    values = {k: draw(valid[k]) for k in keys}
    for k in draw(st.lists(st.sampled_from(sorted(wild)), unique=True, max_size=max_wild)):
        values[k] = draw(wild[k])
    return values


SETTINGS = {
    "steps": st.integers(1, 3),
    "num_samples": st.integers(1, 3),
    "seed": st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    "guidance_scale": st.one_of(st.none(), floats(0, 20)),
    "sampler": st.sampled_from(["ddim", "dpm", None]),
    "coupling": st.sampled_from(["official", "paper", None]),
    "partner_weight": st.one_of(st.none(), floats(0, 100)),
    "text_temperature": st.one_of(st.none(), floats(0.01, 10)),
    "outputs": st.sampled_from(["image", "text", ["image", "audio"], "audio,text"]),
}
WILD_SETTINGS = {
    "steps": st.one_of(st.integers(-2, 0), st.integers(1001, 10**30), ANY_VALUE).filter(lambda v: not _slow_steps(v)),
    "num_samples": st.one_of(st.integers(-1, 0), st.integers(17, 2**64), ANY_VALUE),
    "seed": st.one_of(st.integers(max_value=-1), st.integers(2**32, 2**70), ANY_VALUE),
    "guidance_scale": st.one_of(floats(), floats(), st.sampled_from([1e6, 1e15, 1e-30]), ANY_VALUE),
    "sampler": st.one_of(st.sampled_from(["DDIM", " dpm", "euler", ""]), ANY_VALUE),
    "coupling": st.one_of(st.sampled_from(["Paper", "both", ""]), ANY_VALUE),
    "partner_weight": st.one_of(floats(), floats(), st.sampled_from([1e6, 1e15, 1e-30]), ANY_VALUE),
    "text_temperature": st.one_of(floats(), floats(), st.sampled_from([1e6, 1e15, 1e-30]), ANY_VALUE),
}


@given(kw=mostly_valid(SETTINGS, WILD_SETTINGS))
@fuzz(40)
def test_engine_settings_of_any_type_and_value(pipe, kw):
    """steps, num_samples, seed, guidance, sampler, coupling, partner weight and text temperature of any type and
    value: whole numbers in range and known names run (exactly as asked); anything else is refused."""
    kw = {"inputs": {"text": "a red circle"}, **kw}
    tally = TALLY["engine settings"]
    result = run_clean(pipe, tally, **kw)
    if result is not None:
        steps = pipe.config.defaults.steps if kw["steps"] is None else int(kw["steps"])
        assert result.params["steps"] == steps and result.params["num_samples"] == int(kw["num_samples"])
        assert 0 <= result.seed <= 2**32 - 1
        if isinstance(kw.get("seed"), int) and not isinstance(kw["seed"], bool):
            assert result.seed == kw["seed"]


SURROGATES = st.characters(exclude_categories=())  # every code point, lone surrogates included
TEXTS = st.one_of(
    st.text(SURROGATES, max_size=40),
    st.lists(
        st.sampled_from(["\x00", " ", "\n", "\t", "\u200b", "\ufeff", "\u202e", "é", "😀", ".png"]), max_size=12
    ).map("".join),
    st.builds(lambda s, n: s * n, st.text(SURROGATES, min_size=1, max_size=4), st.integers(1000, 40_000)),
    st.builds("{}{}{}".format, st.text(max_size=5), st.integers(0xD800, 0xDFFF).map(chr), st.text(SURROGATES)),
)


@given(text=TEXTS)
@fuzz(30)
def test_engine_text_of_any_unicode(pipe, text):
    """Any text is encoded (NULs, emoji, 160k characters), except a lone surrogate, which is refused by name."""
    tally = TALLY["engine text"]
    surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    result = run_clean(pipe, tally, inputs={"text": text}, outputs="image")
    assert (result is None) == surrogate
    if result is not None:
        kept = bool(text.strip() or Path(text).suffix)  # whitespace alone is no input
        assert result.params["inputs"] == ([["text", text]] if kept else [])


WEIGHT = st.one_of(floats(0, 3), floats(0, 3), floats(), st.sampled_from([0.0, 1e308, -0.0, float("nan")]), ANY_VALUE)


@given(
    weights=st.dictionaries(st.sampled_from(["text", "image", "IMAGE ", "text", "image", "smell"]), WEIGHT, max_size=3),
    as_list=st.booleans(),
)
@fuzz(40)
def test_engine_weights_of_any_float(pipe, weights, as_list):
    """Each weight must be a finite number >= 0 for an input that exists, and not all 0; they are kept as given."""
    inputs = {"text": "a blue box", "image": np.full((8, 8, 3), 200, np.uint8)}
    if as_list:
        weights = {k: [v] for k, v in weights.items()}
    kw = dict(inputs=inputs, weights=weights, outputs="text")
    tally = TALLY["engine weights"]
    result = run_clean(pipe, tally, **kw)
    named = {k.strip().lower(): v for k, v in weights.items()} if all(isinstance(k, str) for k in weights) else None
    all_floats = named is not None and all(isinstance(w, float) for v in named.values() for w in _values(v))
    if all_floats and set(named) <= set(inputs):
        lists = {m: _values(named.get(m, 1.0)) for m in inputs}
        if not all(lists.values()):
            assert result is None  # an empty weight list for an input
            return
        given_ = {m: v[0] for m, v in lists.items()}
        bad = any(not math.isfinite(w) or w < 0 for w in given_.values()) or not any(w > 0 for w in given_.values())
        assert (result is None) == bad, given_
        if result is not None:
            assert result.params["weights"] == [[m, w] for m, w in given_.items() if w > 0]
    elif named is not None and not set(named) <= set(inputs):
        assert result is None  # a weight for an input that is not there


VALID_NAME = st.sampled_from(["text", "image", "video", "audio", " Image", "AUDIO\n", "Text "])
OUTPUT_NAME = st.one_of(VALID_NAME, VALID_NAME, VALID_NAME, st.text(max_size=6))
OUTPUT_LISTS = st.lists(OUTPUT_NAME, max_size=4)
NAME_LISTS = st.lists(VALID_NAME, min_size=1, max_size=4)


@given(
    outputs=st.one_of(
        NAME_LISTS, OUTPUT_LISTS, NAME_LISTS.map(",".join), OUTPUT_LISTS.map(",".join), NAME_LISTS.map(tuple), ANY_VALUE
    )
)
@fuzz(30)
def test_engine_outputs_of_any_strings(pipe, outputs):
    """Outputs are modality names (any case, spaces around, repeats, in any order): those are generated, in the
    canonical order; any other name, or none, is refused."""
    kw = dict(inputs={"text": "a green wedge"}, outputs=outputs)
    tally = TALLY["engine outputs"]
    result = run_clean(pipe, tally, **kw)
    if isinstance(outputs, (str, list, tuple)):
        items = [o for o in outputs.split(",") if o.strip()] if isinstance(outputs, str) else outputs
        names = {str(o).strip().lower() for o in items}
        assert (result is None) == (not names or not names <= set(MODALITIES))
        if result is not None:
            assert result.params["outputs"] == [m for m in MODALITIES if m in names]


def _pixels_ok(a: np.ndarray) -> bool:
    if a.dtype == np.uint8:
        return True
    if a.dtype.kind in "iu":
        return int(a.min()) >= 0 and int(a.max()) <= 255
    if a.dtype.kind == "f":
        return bool(np.isfinite(a).all()) and float(a.min()) >= 0 and float(a.max()) <= 1
    return False


def image_ok(a: np.ndarray) -> bool:
    b = a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
    shaped = b.ndim == 2 or (b.ndim == 3 and b.shape[-1] in (3, 4))
    return shaped and b.shape[0] > 0 and b.shape[1] > 0 and _pixels_ok(b)


def video_ok(a: np.ndarray) -> bool:
    return a.ndim == 4 and a.shape[-1] == 3 and 0 not in a.shape[:3] and _pixels_ok(a)


OBJECT_ARRAYS = st.sampled_from(
    [np.array([[1, "a"]], dtype=object), np.full((2, 2, 3), None, dtype=object), np.zeros((2, 2, 2, 3), object)]
)
ANY_ARRAY = st.one_of(
    hnp.arrays(
        st.one_of(hnp.scalar_dtypes(), hnp.unicode_string_dtypes(max_len=2)),
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5),
        elements={"allow_subnormal": False},
    ),
    OBJECT_ARRAYS,
)


def pixel_arrays(shapes: st.SearchStrategy[tuple[int, ...]]) -> st.SearchStrategy[np.ndarray]:
    """Pixel arrays in range: floats in [0, 1], integers in 0..255."""
    return st.sampled_from([np.uint8, np.float32, np.float64, np.float16, np.int16]).flatmap(
        lambda dtype: hnp.arrays(
            dtype, shapes, elements=floats(0, 1, width=16) if np.dtype(dtype).kind == "f" else st.integers(0, 255)
        )
    )


PIXELS = pixel_arrays(
    st.one_of(hnp.array_shapes(min_dims=2, max_dims=3, max_side=6), st.sampled_from([(5, 7, 3), (3, 2, 4), (4, 4, 1)]))
)
FRAMES = pixel_arrays(st.tuples(st.integers(0, 3), st.integers(1, 6), st.integers(1, 6), st.just(3)))
WAVES = hnp.arrays(
    st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.uint8, np.float16]),
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6),
    elements={"allow_subnormal": False},
)
RATES = st.one_of(st.integers(-2, 200_000), st.sampled_from([8000, 44100, 1]), ANY_VALUE)


@given(
    kind=st.sampled_from(["image", "video", "audio", "audio-clip", "video-clip"]),
    array=st.one_of(ANY_ARRAY, PIXELS, FRAMES, WAVES),
    rate=RATES,
    rate_first=st.booleans(),
)
@fuzz(50)
def test_engine_arrays_of_any_dtype_shape_and_range(pipe, kind, array, rate, rate_first):
    """Arrays as image, video (frames or a VideoClip) and audio ((waveform, rate), either order, or an AudioClip):
    read when they are pictures / sound, otherwise refused; images and frames follow the documented rules exactly."""
    if kind == "audio":
        value = (rate, array) if rate_first and isinstance(rate, int) else (array, rate)
    elif kind == "audio-clip":
        value = AudioClip(array, 16000)
    elif kind == "video-clip":
        value = VideoClip(array, rate if isinstance(rate, float) else 8.0)
    else:
        value = array
    modality = kind.split("-")[0]
    kw = dict(inputs={modality: value}, outputs="image")
    tally = TALLY["engine arrays"]
    with np.errstate(all="ignore"), warnings.catch_warnings():  # extreme values are what is being tested
        warnings.simplefilter("ignore", RuntimeWarning)
        result = run_clean(pipe, tally, **kw)
    if kind == "image":
        assert (result is not None) == image_ok(array), (array.dtype, array.shape)
    if kind == "video":
        assert (result is not None) == video_ok(array), (array.dtype, array.shape)
    if modality == "audio" and result is not None:
        assert array.dtype.kind in "iuf" and array.ndim in (1, 2) and array.size > 0


# --- the CLI: python -m codi generate ARGS -----------------------------------------------------------------------


class SharedPipeline:
    """Stands in for CoDiPipeline in codi.cli: `from_preset` returns the module's tiny pipeline (loading it takes
    0.5 s per call; model, device and dtype values are fuzzed with real loading in test_cli_model_options)."""

    pipe: CoDiPipeline

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> CoDiPipeline:
        assert name == "tiny" and kwargs["device"] == "cpu"
        return cls.pipe


@contextlib.contextmanager
def shared_model(pipe: CoDiPipeline) -> Iterator[None]:
    SharedPipeline.pipe = pipe
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "CoDiPipeline", SharedPipeline)
        yield


def run_cli(argv: list[str]) -> tuple[int, str]:
    """`python -m codi ARGV` in this process: (exit code, stderr). Exceptions other than SystemExit propagate."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse: usage errors (2) and --help (0)
            code = e.code or 0
    return code, err.getvalue()


@pytest.fixture(scope="module")
def files(work) -> dict[str, Path]:
    """Small media files, readable and not."""
    folder = work / "files"
    folder.mkdir()
    Image.fromarray(_quadrant_frame(16, 16)).save(folder / "good.png")
    _encode(np.stack([_quadrant_frame()] * 3), folder / "good.mp4")
    sf.write(folder / "good.wav", np.sin(np.arange(8000) * 0.05).astype(np.float32), 16000)
    (folder / "junk.txt").write_text("not media")
    (folder / "empty.png").write_bytes(b"")
    (folder / "a folder").mkdir()
    return {p.name: p for p in folder.iterdir()} | {"missing.png": folder / "missing.png"}


def _paths(files: dict[str, Path]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([str(p) for p in files.values()]), st.sampled_from(["", "a" * 300, "x\x00.png"]))


FLOAT_TEXT = st.one_of(
    floats(0, 20).map(str),
    st.sampled_from(["nan", "inf", "-1", "1e400", "1e25", "1e-40", "0", ""]),
    st.text(max_size=3),
)
INT_TEXT = st.one_of(
    st.integers(-2, 3).map(str), st.sampled_from(["1e400", "2.5", "", "0x1", str(2**33)]), st.text(max_size=3)
)


@st.composite
def cli_argv(draw, files: dict[str, Path], out: Path) -> list[str]:
    """`generate` options with valid values, a few of them wild, sometimes a stray token; --out is always `out`."""
    valid = {
        "--text": st.text(max_size=12),
        "--image": st.just(str(files["good.png"])),
        "--video": st.just(str(files["good.mp4"])),
        "--audio": st.just(str(files["good.wav"])),
        "--weight": st.builds("text={}".format, st.sampled_from(["0.5", "1", "2"])),
        "--outputs": st.sampled_from(["text", "image", "audio,video", "image, TEXT"]),
        "--seed": st.integers(0, 2**32 - 1).map(str),
        "--steps": st.sampled_from(["1", "2"]),
        "--num-samples": st.sampled_from(["1", "2"]),
        "--guidance": floats(0, 15).map(str),
        "--partner-weight": floats(0, 20).map(str),
        "--text-temperature": floats(0.05, 2).map(str),
        "--sampler": st.sampled_from(["ddim", "dpm"]),
        "--coupling": st.sampled_from(["official", "paper"]),
    }
    wild = {
        "--text": st.text(SURROGATES, max_size=12),
        "--image": _paths(files),
        "--video": _paths(files),
        "--audio": _paths(files),
        "--weight": st.one_of(
            st.builds("{}={}".format, st.sampled_from([*MODALITIES, "smell", ""]), FLOAT_TEXT), st.text(max_size=5)
        ),
        "--outputs": st.lists(OUTPUT_NAME, max_size=3).map(",".join),
        "--seed": INT_TEXT,
        "--steps": INT_TEXT,
        "--num-samples": INT_TEXT,
        "--guidance": FLOAT_TEXT,
        "--partner-weight": FLOAT_TEXT,
        "--text-temperature": FLOAT_TEXT,
        "--sampler": st.sampled_from(["euler", "", "DDIM"]),
        "--coupling": st.sampled_from(["both", ""]),
    }
    options = draw(mostly_valid(valid, wild, optional=True, max_wild=2))
    argv = ["generate", *(x for flag, value in options.items() for x in (flag, value))]
    if draw(st.integers(0, 4)) == 0:
        argv.insert(draw(st.integers(1, len(argv))), draw(st.text(max_size=5)))  # argparse must say what is wrong
    return [*argv, "--model", "tiny", "--out", str(out), "--quiet"]


def test_cli_arguments_of_any_kind(pipe, files, work):
    """`python -m codi generate` with options of any value, now and then a stray token: exit 0 with the files that
    result.json lists, or exit 2 with `error: ...` (ours, or argparse's usage message); never a traceback."""
    tally = TALLY["cli arguments"]

    @given(data=st.data())
    @fuzz(30)
    def prop(data):
        out = fresh(work, "cli")
        argv = data.draw(cli_argv(files, out))
        with shared_model(pipe):
            code, err = run_cli(argv)
        assert code in (0, 2, 3) and "Traceback" not in err, (code, err)
        if code == 0 and "usage:" not in err and (out / "result.json").exists():
            meta = json.loads((out / "result.json").read_text())
            assert sorted(meta["outputs"]) == sorted(p.name for p in out.iterdir() if p.name != "result.json")
            tally["ok"] += 1
        elif code == 0:
            tally["help"] += 1  # a stray -h
        else:
            assert "error:" in err, err  # argparse's "usage: ... error: ..." or ours "error: ..."
            tally["refused"] += 1

    prop()
    assert tally["ok"] and tally["refused"], tally


# --- the batch runner: python -m codi generate --batch FILE.jsonl ------------------------------------------------

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(2**31, 2**70),
    floats(),
    st.text(SURROGATES, max_size=6),
)
JSON_ANY = st.recursive(
    JSON_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6
)


def batch_line(files: dict[str, Path]) -> st.SearchStrategy[Any]:
    """One JSONL line: mostly a request (any subset of the keys, one of them perhaps wild), else any JSON value."""
    good = st.sampled_from([str(files["good.png"]), str(files["good.mp4"]), str(files["good.wav"])])
    valid = {
        "id": st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
        "text": st.text(max_size=12),
        "image": st.just(str(files["good.png"])),
        "video": st.just(str(files["good.mp4"])),
        "audio": st.sampled_from([str(files["good.wav"]), str(files["good.mp4"])]),
        "weights": st.dictionaries(st.sampled_from(["text"]), floats(0.1, 2), max_size=1),
        "outputs": st.sampled_from(["text", "image", "audio,video", ["image", "text"]]),
        "seed": st.integers(0, 2**32 - 1),
        "steps": st.integers(1, 2),
        "guidance": floats(0, 5),
        "sampler": st.sampled_from(["ddim", "dpm"]),
        "coupling": st.sampled_from(["official", "paper"]),
        "partner_weight": floats(0, 5),
        "num_samples": st.integers(1, 2),
        "text_temperature": floats(0.05, 2),
    }
    paths = st.one_of(_paths(files), good, st.text(SURROGATES, max_size=8), JSON_ANY)
    wild = {
        "id": st.one_of(st.integers(-2, 10**6), st.sampled_from(["", "../x", "a b", "é"]), JSON_ANY),
        "text": st.one_of(st.text(SURROGATES, max_size=12), JSON_ANY),
        "image": paths,
        "video": paths,
        "audio": paths,
        "weights": st.one_of(
            st.dictionaries(st.sampled_from([*MODALITIES, "smell"]), st.one_of(floats(), JSON_ANY), max_size=2),
            JSON_ANY,
        ),
        "outputs": st.one_of(
            st.sampled_from(["", "smell", "text,,image"]), st.lists(OUTPUT_NAME, max_size=2), JSON_ANY
        ),
        "seed": JSON_ANY,
        "steps": st.one_of(st.integers(-1, 0), JSON_ANY).filter(lambda v: not _slow_steps(v)),
        "guidance": JSON_ANY,
        "sampler": st.one_of(st.just("euler"), JSON_ANY),
        "coupling": st.one_of(st.just("both"), JSON_ANY),
        "partner_weight": JSON_ANY,
        "num_samples": st.one_of(st.integers(-1, 0), st.integers(17, 2**40), JSON_ANY),
        "text_temperature": JSON_ANY,
        "colour": JSON_ANY,  # not a batch key
    }
    request = mostly_valid(valid, wild, optional=True, max_wild=1)
    return st.one_of(request, request, request, request, request, JSON_ANY)


def test_batch_lines_of_any_json(pipe, files, work):
    """Batches of 1-3 lines of any JSON (and junk lines): refused whole, naming the file and line, before anything
    runs; or run, each failing request recorded with its InputError / MediaError and the others written."""
    tally = TALLY["batch lines"]

    @given(data=st.data())
    @fuzz(30)
    def prop(data):
        lines = data.draw(st.lists(batch_line(files), min_size=1, max_size=3))
        raw = [json.dumps(x) for x in lines] + data.draw(st.sampled_from([[], [], [], [""], ["{"], ["not json"]]))
        folder = fresh(work, "batch")
        folder.mkdir()
        (folder / "requests.jsonl").write_text("\n".join(raw) + "\n")  # json.dumps escapes lone surrogates
        out = folder / "out"
        with shared_model(pipe):
            code, err = run_cli(["generate", "--batch", str(folder / "requests.jsonl"), "--out", str(out), "--quiet"])
        assert code in (0, 2) and "Traceback" not in err, (code, err)
        if not out.exists():  # refused before anything ran: read_batch's message names the line
            assert code == 2 and "error: " in err and "requests.jsonl" in err, err
            tally["refused"] += 1
            return
        summary = json.loads((out / "summary.json").read_text())
        failed = [r for r in summary["results"] if r.get("error")]
        assert (code == 2) == bool(failed) and summary["requests"] == len(cli.read_batch(folder / "requests.jsonl"))
        for r in failed:
            assert r["error"].split(":")[0] in ("InputError", "MediaError", "FileNotFoundError"), r
        for r in summary["results"]:
            if not r.get("error"):
                assert (out / str(r["id"]) / "result.json").exists()
        tally["ran, some lines failed" if failed else "ran"] += 1

    prop()
    assert tally["ran"] and tally["refused"], tally


# --- the Studio's generate handler, called as Gradio calls it ----------------------------------------------------


@pytest.fixture(scope="module")
def studio(pipe, work) -> Studio:
    engine = Engine(pipe, model_info(pipe, "tiny", "cpu"), work / "runs", keep_runs=4)
    return Studio(engine, work / "recordings", work / "examples.json")


@pytest.fixture(scope="module")
def form_components(studio, work) -> list[Any]:
    """The page's generate inputs (FORM_FIELDS order), whose `preprocess` turns an API payload into handler args."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_EXAMPLES_CACHE", str(work / "examples-cache"))
        demo = create_demo(studio.engine, recordings_dir=work / "recordings")
    (fn,) = [f for f in demo.fns.values() if f.api_name == "generate"]
    assert len(fn.inputs) == len(FORM_FIELDS)
    return fn.inputs


FILE_FIELDS = ("image", "video", "audio")


def ui_payload(files: dict[str, Path]) -> st.SearchStrategy[dict[str, Any]]:
    """What an API client or the page sends for the generate inputs (FORM_FIELDS): mostly in range."""
    valid = {
        "text": st.one_of(st.text(max_size=20), st.just("a red circle")),
        "image": st.sampled_from([None, "", str(files["good.png"])]),
        "video": st.sampled_from([None, "", str(files["good.mp4"])]),
        "audio": st.sampled_from([None, "", str(files["good.wav"])]),
        **{f"{m}_weight": floats(0, 2) for m in MODALITIES},
        "outputs": st.lists(st.sampled_from(MODALITIES), min_size=1, max_size=2, unique=True),
        "steps": st.integers(1, 3),
        "guidance": floats(0, 15),
        "sampler": st.sampled_from(["dpm", "ddim", None]),
        "seed": st.integers(0, 2**32 - 1),
        "randomize_seed": st.booleans(),
        "coupling": st.sampled_from(["official", "paper", None]),
        "num_samples": st.integers(1, 2),
        "text_temperature": floats(0.05, 2),
        "partner_weight": floats(0, 20),
    }
    number = st.one_of(floats(-1, 3), st.sampled_from([float("nan"), float("inf"), 1.5, 2.5, 1e9]), JSON_LEAF)
    paths = st.sampled_from([str(p) for p in files.values()])
    wild = {
        "text": st.one_of(st.text(SURROGATES, max_size=30), JSON_LEAF),
        "image": paths,
        "video": paths,
        "audio": paths,
        **{f"{m}_weight": number for m in MODALITIES},
        "outputs": st.one_of(st.just([]), st.lists(st.sampled_from(MODALITIES), max_size=6), st.lists(OUTPUT_NAME)),
        "steps": number.filter(lambda v: not _slow_steps(v)),
        "guidance": number,
        "sampler": st.one_of(st.just("euler"), JSON_LEAF),
        "seed": st.one_of(number, st.just(-1)),
        "randomize_seed": JSON_LEAF,
        "coupling": st.one_of(st.just("both"), JSON_LEAF),
        "num_samples": number,
        "text_temperature": number,
        "partner_weight": number,
    }
    return mostly_valid(valid, wild)


def gradio_args(components: list[Any], payload: dict[str, Any]) -> list[Any] | None:
    """The handler's arguments for an API payload, as Gradio's preprocess makes them; None when Gradio refuses
    the payload itself. Files are passed as the paths Gradio hands over after its upload step."""
    args = []
    for name, component in zip(FORM_FIELDS, components):
        if name in FILE_FIELDS:
            args.append(payload[name])
            continue
        try:
            args.append(component.preprocess(payload[name]))
        except Exception:  # gr.Error (out of bounds, not a choice) or Gradio's own conversion failing
            return None
    return args


def test_ui_generate_handler_never_raises_but_shows_a_message(studio, form_components, files):
    """Studio.generate with what Gradio hands it for any API payload: the result panel's values, or a gr.Error titled
    "Cannot generate" / "Nothing to generate" (never "Could not generate", the catch-all for engine bugs)."""
    tally = TALLY["ui handler"]

    @given(payload=ui_payload(files))
    @fuzz(40)
    def prop(payload):
        args = gradio_args(form_components, payload)
        if args is None:
            tally["refused by Gradio's preprocess"] += 1
            return
        values = dict(zip(FORM_FIELDS, args))
        try:
            updates = studio.generate(*args)
        except gr.Error as e:
            assert e.message.strip() and e.title in ("Cannot generate", "Nothing to generate"), (e.title, e.message)
            tally["gr.Error"] += 1
            return
        result = dict(zip(RESULT_FIELDS, updates))
        assert len(updates) == len(RESULT_FIELDS) and result["summary"].startswith("**")
        outputs = set(values["outputs"])
        for name in ("image", "video", "audio"):
            assert (result[f"{name}_out"] is not None) == (name in outputs)
            assert result[f"{name}_out"] is None or Path(result[f"{name}_out"]).is_file()
        assert (result["text_out"] is not None) == ("text" in outputs)
        assert isinstance(result["seed"], int) and result["params"]["seed"] == result["seed"]
        assert all(Path(f).is_file() for f in result["files"])
        tally["ok"] += 1

    prop()
    assert tally["ok"] and tally["gr.Error"], tally


# --- known bad media, through all three front ends --------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_media(work) -> dict[str, Path]:
    """One file per class of upload: broken, of the wrong kind, over a limit, or odd but readable."""
    d = work / "media"
    d.mkdir()
    Image.fromarray(_quadrant_frame(16, 16)).save(d / "good.png")
    png = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(png[:60])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(d / "one-pixel.png")
    Image.new("P", (8, 8)).save(d / "palette.png", transparency=0)
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(d / "cmyk.jpg")
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (8, 8)).save(d / "ünï códe ✓ name.png")
    _encode(np.stack([_quadrant_frame()] * 4), d / "good.mp4")
    (d / "truncated.mp4").write_bytes((d / "good.mp4").read_bytes()[:300])
    (d / "empty.mp4").write_bytes(b"")
    _encode(np.stack([_quadrant_frame()]), d / "one-frame.mp4")
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=7x5:d=0.3", "-pix_fmt", "yuv444p", str(d / "odd-size.mp4"))
    wave = np.sin(np.arange(8000) * 0.05).astype(np.float32)
    sf.write(d / "good.wav", wave, 16000)
    sf.write(d / "nan.wav", np.where(np.arange(8000) == 7, np.nan, wave), 16000, subtype="FLOAT")
    sf.write(d / "no-samples.wav", np.zeros(0, np.float32), 16000)
    sf.write(d / "one-sample.wav", np.full(1, 0.5, np.float32), 16000)
    sf.write(d / "33-channels.wav", np.zeros((100, 33), np.float32), 16000)
    sf.write(d / "400-khz.wav", np.zeros(100, np.float32), 400_000)
    sf.write(d / "u8.wav", wave, 8000, subtype="PCM_U8")
    (d / "a folder").mkdir()
    return {p.name: p for p in d.iterdir()}


# (case, input kind, file, expected message; None: read and generated)
BAD_MEDIA = [
    ("image-truncated", "image", "truncated.png", r"cannot read image truncated.png: "),
    ("image-empty-file", "image", "empty.png", r"cannot read image empty.png: cannot identify image file"),
    ("image-text-file", "image", "text.png", r"cannot read image text.png: cannot identify image file"),
    ("image-is-a-wav", "image", "good.wav", r"cannot read image good.wav: cannot identify image file"),
    ("image-is-a-folder", "image", "a folder", r"cannot read image a folder: .*Is a directory"),
    ("image-missing", "image", "missing.png", r"cannot read image missing.png: .*No such file"),
    ("image-one-pixel", "image", "one-pixel.png", None),
    ("image-palette-transparent", "image", "palette.png", None),
    ("image-cmyk-jpeg", "image", "cmyk.jpg", None),
    ("image-animated-gif", "image", "animated.gif", None),
    ("image-unicode-name", "image", "ünï códe ✓ name.png", None),
    ("video-truncated", "video", "truncated.mp4", r"cannot read video truncated.mp4: "),
    ("video-empty-file", "video", "empty.mp4", r"cannot read video empty.mp4: ffmpeg cannot open it as a video"),
    ("video-is-a-still-image", "video", "good.png", None),  # ffmpeg reads a PNG as a one-frame video
    ("video-is-audio", "video", "good.wav", r"cannot read video good.wav: it has no video stream, only audio"),
    ("video-missing", "video", "missing.mp4", r"video file not found: .*missing.mp4"),
    ("video-one-frame", "video", "one-frame.mp4", None),
    ("video-odd-size", "video", "odd-size.mp4", None),
    ("audio-silent-video", "audio", "good.mp4", r"cannot read audio good.mp4: the file has no audio stream"),
    ("audio-is-an-image", "audio", "good.png", r"cannot read audio good.png: the file has no audio stream"),
    ("audio-nan-samples", "audio", "nan.wav", r"cannot read audio nan.wav: 1 of its 8,000 samples are NaN"),
    ("audio-no-samples", "audio", "no-samples.wav", r"cannot read audio no-samples.wav: it has no samples"),
    ("audio-33-channels", "audio", "33-channels.wav", r"it has 33 channels, over the limit of 32 channels"),
    ("audio-400-khz", "audio", "400-khz.wav", r"400,000 samples per second, over the limit of 384,000"),
    ("audio-missing", "audio", "missing.wav", r"audio file not found: .*missing.wav"),
    ("audio-is-a-folder", "audio", "a folder", r"cannot read audio a folder: "),
    ("audio-one-sample", "audio", "one-sample.wav", None),
    ("audio-unsigned-8-bit", "audio", "u8.wav", None),
]


@pytest.mark.parametrize(("kind", "name", "message"), [c[1:] for c in BAD_MEDIA], ids=[c[0] for c in BAD_MEDIA])
def test_bad_media_classes_through_engine_ui_and_cli(pipe, studio, bad_media, work, kind, name, message):
    """Each class of upload gets the same answer from the engine, the Studio handler and the CLI: read and
    generated, or refused with one message (tests/test_media_robustness.py checks the readers themselves)."""
    path = bad_media.get(name, bad_media["good.png"].parent / name)
    out = fresh(work, "media")
    args = dict.fromkeys(FORM_FIELDS) | {"outputs": ["image"], "steps": 1, "seed": 3, kind: str(path)}
    args |= {f"{m}_weight": 1.0 for m in MODALITIES} | {"randomize_seed": False, "num_samples": 1}
    with shared_model(pipe):
        code, err = run_cli(["generate", f"--{kind}", str(path), "--outputs", "image", "--steps", "1", "--seed", "3",
                             "--model", "tiny", "--out", str(out), "--quiet"])  # fmt: skip
    if message is None:
        result = run_clean(pipe, inputs={kind: str(path)}, outputs="image", seed=3)
        assert result is not None and result.params["inputs"][0][0] == kind
        updates = dict(zip(RESULT_FIELDS, studio.generate(*[args[k] for k in FORM_FIELDS])))
        assert Path(updates["image_out"]).is_file() and updates["seed"] == 3
        assert code == 0 and (out / "image.png").is_file(), err
        np.testing.assert_array_equal(np.asarray(Image.open(out / "image.png")), np.asarray(result.image))
        return
    with pytest.raises(InputError, match=message) as refused:
        pipe(inputs={kind: str(path)}, outputs="image", steps=1, seed=3)
    with pytest.raises(gr.Error) as shown:
        studio.generate(*[args[k] for k in FORM_FIELDS])
    assert shown.value.title == "Cannot generate" and shown.value.message == str(refused.value)
    assert code == 2 and f"error: {refused.value}" in err and "Traceback" not in err and not out.exists()


# --- the CLI's model options, with real loading ------------------------------------------------------------------

MODEL_OPTIONS = [
    ("model-empty", ["--model", ""], 2, "not a CoDi checkpoint folder"),
    ("model-unknown-name", ["--model", "nonexistent"], 2, "is neither a preset"),
    ("model-uncached-hub-id", ["--model", "someone/some-model"], 2, "could not be downloaded"),
    ("model-nul", ["--model", "a\x00b"], 2, "is neither a preset"),
    ("model-a-folder-without-config", ["--model", "/"], 2, "no config.json"),
    ("device-cuda-absent", ["--device", "cuda"], 2, "no CUDA GPU is available"),
    ("device-unknown", ["--device", "tpu9"], 2, "unknown device 'tpu9'"),
    ("device-negative-index", ["--device", "cpu:-1"], 2, "unknown device"),
    ("device-mps-absent", ["--device", "mps"], 2, "Metal backend is not available"),
    ("device-cpu-0", ["--device", "cpu:0"], 0, None),
    ("dtype-bfloat16", ["--dtype", "bfloat16"], 0, None),
    ("dtype-unknown", ["--dtype", "float8"], 2, "invalid choice: 'float8'"),
    ("max-memory-not-a-number", ["--max-memory", "lots"], 2, "invalid float value: 'lots'"),
    ("offload-model", ["--offload", "model"], 0, None),
    ("batch-missing", ["--batch", "/no/such/requests.jsonl"], 2, "No such file or directory"),
]


@pytest.mark.parametrize(("args", "code", "message"), [c[1:] for c in MODEL_OPTIONS], ids=[c[0] for c in MODEL_OPTIONS])
def test_cli_model_options(work, args, code, message):
    """--model, --device, --dtype, --max-memory, --offload and --batch values, loading for real: a message, or a run."""
    out = fresh(work, "options")
    got, err = run_cli(
        ["generate", "--text", "a", "--outputs", "image", "--steps", "1", "--out", str(out), "--quiet", *args]
    )
    assert got == code and "Traceback" not in err, err
    if message is not None:
        assert message in err
    else:
        assert (out / "image.png").is_file()


# --- the bugs this file found, one minimal reproducer each (all fixed; they stay as regression tests) -----------

ENGINE_REPRODUCERS = [
    ("seed-unchecked", dict(seed="abc")),
    ("seed-unchecked", dict(seed=float("nan"))),
    ("seed-unchecked", dict(seed=float("inf"))),
    ("seed-unchecked", dict(seed=[1])),
    ("number-unchecked", dict(guidance_scale="high")),
    ("number-unchecked", dict(partner_weight=[0])),
    ("number-unchecked", dict(outputs="text", text_temperature="x")),
    ("enum-unchecked", dict(sampler="euler")),
    ("enum-unchecked", dict(coupling="both")),
    ("int-overflow", dict(steps=10**400)),
    ("int-overflow", dict(num_samples=10**400)),
    ("int-overflow", dict(inputs={"text": "a"}, weights={"text": 10**400})),
    ("huge-guidance", dict(inputs={"text": "a red circle"}, outputs="text", guidance_scale=1e25)),
    ("huge-guidance", dict(inputs={"text": "a"}, outputs=["image", "audio"], guidance_scale=1e20, steps=2, seed=1)),
    ("tiny-temperature", dict(inputs={"text": "a red circle"}, outputs="text", text_temperature=1e-40)),
    ("audio-rate-unchecked", dict(inputs={"audio": (np.zeros(1600, np.float32), float("nan"))})),
    ("audio-rate-unchecked", dict(inputs={"audio": (np.zeros(1600, np.float32), float("inf"))})),
    ("audio-rate-unchecked", dict(inputs={"audio": (np.zeros(1600, np.float32), "x")})),
    ("video-fps-unchecked", dict(inputs={"video": VideoClip(np.zeros((3, 8, 8, 3), np.uint8), float("nan"))})),
    ("video-fps-unchecked", dict(inputs={"video": VideoClip(np.zeros((3, 8, 8, 3), np.uint8), float("inf"))})),
    ("audio-array-limits", dict(inputs={"audio": (np.full(5, 0.1, np.float32), 2**63)})),
    ("audio-array-limits", dict(inputs={"audio": (np.full(5, 0.1, np.float32), 10**30)})),
    ("ragged-audio", dict(inputs={"audio": ([[0.1, 0.2], [0.3]], 16000)})),
    ("container-unchecked", dict(inputs=5)),
    ("container-unchecked", dict(inputs="text")),
    ("container-unchecked", dict(inputs=[("text", "a", "b")])),
    ("container-unchecked", dict(outputs=5)),
    ("image-path-unencodable", dict(inputs={"image": "a\x00b.png"})),
    ("image-path-unencodable", dict(inputs={"image": "\ud800.png"})),
    ("long-file-name", dict(inputs={"video": "v" * 300 + ".mp4"})),
    ("long-file-name", dict(inputs={"audio": "a" * 300 + ".wav"})),
]


@pytest.mark.parametrize(
    "kwargs", [pytest.param(kw, id=f"{bug}-{i}") for i, (bug, kw) in enumerate(ENGINE_REPRODUCERS)]
)
def test_engine_reproducer(pipe, kwargs):
    run_clean(pipe, **kwargs)  # a result with well-formed outputs, or InputError / MediaError with a message


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
def test_a_long_low_rate_audio_array_is_cut_before_resampling(pipe):
    """An array given through the API should cost what a file of the same sound costs: the condition's second."""

    def peak_mb(value: Any) -> float:
        def kb(key: str) -> int:
            return int(next(ln for ln in open("/proc/self/status") if ln.startswith(key)).split()[1])

        Path("/proc/self/clear_refs").write_text("5")  # restart the peak-RSS count here
        before = kb("VmRSS:")
        run_clean(pipe, inputs={"audio": value}, outputs="image")
        return (kb("VmHWM:") - before) / 1024

    one_second = peak_mb((np.zeros(16000, np.float32), 16000))
    long_array = peak_mb((np.zeros(4000, np.float32), 1))  # 4000 s at 1 Hz: 16 KB of samples
    assert long_array < one_second + 50, (one_second, long_array)  # measured: ~1 MB vs ~500 MB


@pytest.mark.parametrize("device", ["xpu", "meta", "lazy", "ipu"])
def test_cli_refuses_devices_it_cannot_use(work, device):
    out = fresh(work, "device")
    code, err = run_cli(["generate", "--text", "a", "--steps", "1", "--device", device, "--out", str(out), "--quiet"])
    assert code == 2 and "error:" in err


def test_cli_model_name_over_255_bytes(work):
    code, err = run_cli(["generate", "--model", "m" * 300, "--text", "a", "--out", str(fresh(work, "x")), "--quiet"])
    assert code == 2 and "error:" in err


def test_cli_out_below_a_file(pipe, work):
    blocker = fresh(work, "file")
    blocker.write_text("a file")
    with shared_model(pipe):
        code, err = run_cli(["generate", "--text", "a", "--steps", "1", "--model", "tiny", "--out", str(blocker / "o")])
    assert code == 2 and "error:" in err


def test_cli_batch_is_a_folder(work):
    code, err = run_cli(["generate", "--batch", str(work), "--out", str(fresh(work, "o")), "--quiet"])
    assert code == 2 and "error:" in err


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"steps": 10**400}, id="overflow"),
        pytest.param({"guidance": 1e25, "outputs": "text"}, id="runtime-error"),
        pytest.param({"video": "v" * 300}, id="os-error"),
    ],
)
def test_batch_records_a_line_that_hits_an_engine_error_and_goes_on(pipe, work, bad):
    folder = fresh(work, "batch-bug")
    folder.mkdir()
    lines = [{"id": "ok-1", "text": "a", "steps": 1}, {"id": "bad", "text": "a", **bad}, {"id": "ok-2", "steps": 1}]
    (folder / "r.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with shared_model(pipe):
        code, err = run_cli(["generate", "--batch", str(folder / "r.jsonl"), "--out", str(folder / "o"), "--quiet"])
    assert code == 2 and (folder / "o" / "ok-2" / "image.png").is_file()
    assert [json.loads(x)["id"] for x in (folder / "o" / "errors.jsonl").read_text().splitlines()] == ["bad"]


@pytest.mark.parametrize("field", ["steps", "num_samples"])
def test_ui_nan_from_the_api_is_a_message(studio, form_components, field):
    payload = dict.fromkeys(FORM_FIELDS) | {"text": "a", "outputs": ["image"], "steps": 1, "num_samples": 1}
    payload |= {f"{m}_weight": 1.0 for m in MODALITIES} | {"guidance": 2.0, "seed": 1, "text_temperature": 1.0}
    payload |= {"partner_weight": 0.0, field: float("nan")}
    args = gradio_args(form_components, payload)
    assert args is not None  # Gradio's Slider lets NaN through its bounds check
    with pytest.raises(gr.Error):
        studio.generate(*args)


@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan"), float("inf")])
def test_max_memory_must_be_a_positive_number_of_gb(value):
    """--max-memory -1, 0, nan or inf was accepted and meant nothing sensible; refused before loading."""
    with pytest.raises(InputError, match="max_memory must be a"):
        CoDiPipeline.from_preset("tiny", max_memory=value)
