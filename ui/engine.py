"""The model the Studio serves: loading it (or saying why it cannot), running requests, writing run folders."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codi.conditions import InputError
from codi.config import SamplingDefaults
from codi.hub import WeightsNotFoundError
from codi.modality import ALL_MODALITIES
from codi.pipeline import CoDiPipeline, GenerationResult, half_dtype
from codi.results import save_result

MODALITY_NAMES: tuple[str, ...] = tuple(m.value for m in ALL_MODALITIES)  # text, image, video, audio
INPUT_FILE_MODALITIES: tuple[str, ...] = ("image", "video", "audio")
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"

log = logging.getLogger(__name__)

PURPOSES = {
    "tiny": (
        "A small CoDi trained by this repo on the Shapes & Tones world: red, green, blue and yellow circles, squares "
        "and triangles that move up, down, left, right or stay still, and tones whose pitch, timbre and glide say "
        "the same. Try “a red circle” or “a blue box sliding left”: colours come out right almost always, shapes and "
        "motion in 85-100 % of held-out prompts (EVAL.md), and a jointly generated video and sound agree on their "
        "motion about 4 times in 5 (77-85 % across draws and samplers). Weaker: shapes of captions (image→text "
        "79 %) and anything read zero-shot across audio and images (67-81 % shape). It runs offline on a CPU in a "
        "second or two and knows nothing outside that world."
    ),
    "official": (
        "The released CoDi weights (ZinengTang/CoDi): open-domain text, images, 8-frame video and 10 s audio. "
        "Each request loads only the parts it uses (in float16, text->image 3.9 GB of weights, all four outputs "
        "9.3 GB; `--offload model` for smaller GPUs); a run takes seconds on a GPU and minutes on a CPU."
    ),
}


class Cancelled(Exception):
    """The user cancelled a running generation."""


@dataclass
class ModelInfo:
    """What the banner says: which model is loaded, from where, what for, and any problem."""

    name: str
    source: str
    purpose: str
    device: str = "cpu"
    dtype: str = "float32"
    random_weights: bool = False
    problem: str | None = None  # set when no model could be loaded (e.g. official weights absent)
    why: str = ""  # why this model was chosen (app.py's --model auto)

    @property
    def available(self) -> bool:
        return self.problem is None


@dataclass
class GenerationRequest:
    """One Studio request: the inputs (text and file paths), their weights, the outputs and every setting."""

    text: str = ""
    image: str | None = None
    video: str | None = None
    audio: str | None = None
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODALITY_NAMES, 1.0))
    outputs: list[str] = field(default_factory=lambda: ["image"])
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    seed: int | None = None  # None: a random seed, recorded with the run
    coupling: str | None = None
    num_samples: int = 1
    text_temperature: float | None = None
    partner_weight: float | None = None

    def inputs(self) -> dict[str, str]:
        """The non-empty inputs by modality name."""
        values = {"text": (self.text or "").strip(), "image": self.image, "video": self.video, "audio": self.audio}
        return {k: v for k, v in values.items() if v}

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `CoDiPipeline.__call__` (weights only for the inputs given)."""
        inputs = self.inputs()
        return {
            "inputs": inputs,
            "outputs": list(self.outputs),
            "weights": {k: float(self.weights.get(k, 1.0)) for k in inputs},
            "steps": self.steps,
            "guidance_scale": self.guidance,
            "sampler": self.sampler,
            "seed": self.seed,
            "coupling": self.coupling,
            "num_samples": int(self.num_samples),
            "text_temperature": self.text_temperature,
            "partner_weight": self.partner_weight,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationRequest:
        """Inverse of `to_dict`; unknown keys are ignored so older recordings still load."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Run:
    """A finished generation: its folder (outputs, copied inputs, request.json, result.json) and what it made."""

    folder: Path
    request: GenerationRequest  # with the seed actually used and input paths inside `folder`
    result: GenerationResult
    files: list[Path]

    def output(self, name: str) -> Path | None:
        """The first sample's file for an output kind ('image', 'video', 'audio', 'text'), if generated."""
        suffix = {"image": ".png", "video": ".mp4", "audio": ".wav", "text": ".txt"}[name]
        path = self.folder / f"{name}{suffix}"
        return path if path.exists() else None


ProgressFn = Callable[[int, int], None]
LoadingFn = Callable[[str, int], None]  # (component, bytes) before a component's weights are read
DownloadProgressFn = Callable[[int, int, str], None]  # (bytes done, bytes in all, file)


class Engine:
    """A CoDi pipeline (or the reason there is none) plus the folder where runs are written."""

    def __init__(
        self,
        pipe: CoDiPipeline | None,
        info: ModelInfo,
        runs_dir: str | Path,
        keep_runs: int = 64,
        load_args: dict[str, Any] | None = None,
    ) -> None:
        self.pipe = pipe
        self.info = info
        self.runs_dir = Path(runs_dir)
        self.keep_runs = keep_runs
        self.load_args = load_args  # how Engine.load was called: `download_and_load` loads the same way
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._download_stop: threading.Event | None = None

    @classmethod
    def load(
        cls,
        model: str = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        runs_dir: str | Path = "outputs/studio-runs",
        allow_random: bool = True,
        keep_runs: int = 64,
        **preset_kwargs: Any,
    ) -> Engine:
        """Loads a preset ('tiny', 'official') or checkpoint folder; absent official weights give an engine
        without a pipeline whose `info.problem` holds the download command (the app shows it)."""
        kwargs = {"allow_random": allow_random, **preset_kwargs}
        load_args = {"model": model, "device": device, "dtype": dtype, **kwargs}
        try:
            pipe = CoDiPipeline.from_preset(model, device=device, dtype=dtype, **kwargs)
        except WeightsNotFoundError as e:
            log.warning("official weights not loaded: %s", e)
            problem = str(e)
            if model == "official" and dtype == "auto":  # the released model is big: 'auto' is half precision
                dtype = str(half_dtype(device)).removeprefix("torch.")
            info = ModelInfo(model, "not loaded", PURPOSES.get(model, ""), device, dtype, problem=problem)
            return cls(None, info, runs_dir, keep_runs, load_args)
        return cls(pipe, model_info(pipe, model, device), runs_dir, keep_runs, load_args)

    @property
    def can_download(self) -> bool:
        """True when what is missing is the released weights: the page then offers to download them."""
        return self.pipe is None and self.load_args is not None and self.load_args["model"] == "official"

    def download_and_load(self, progress: DownloadProgressFn | None = None) -> ModelInfo:
        """Downloads the released weights into the Hugging Face cache (huggingface_hub, sizes checked), then loads
        them the way `Engine.load` was asked to; the model is served from then on, without a restart.

        Args:
            progress: called with (bytes done, bytes in all, file) as bytes arrive.
        Returns:
            the new ModelInfo.
        Raises:
            Cancelled (`stop_download`; files already complete stay cached), WeightsNotFoundError (offline, the
            Hub failing, a bad size), InputError (a download is already running, or there is nothing to download).
        """
        from codi.hub import download_official

        with self._lock:
            if self.pipe is not None:
                return self.info
            if not self.can_download:
                raise InputError(f"nothing to download: the {self.info.name} model is not the released one")
            if self._download_stop is not None:
                raise InputError("the weights are already downloading (see the progress bar)")
            stop = self._download_stop = threading.Event()

        def on_bytes(done: int, total: int, filename: str) -> None:
            if stop.is_set():
                raise Cancelled("download cancelled")
            if progress is not None:
                progress(done, total, filename)

        args = dict(self.load_args or {})
        model, device, dtype = args.pop("model"), args.pop("device"), args.pop("dtype")
        try:
            download_official(args.get("official_variant", "fp16"), cache_dir=args.get("cache_dir"), progress=on_bytes)
            if stop.is_set():
                raise Cancelled("download cancelled")
            pipe = CoDiPipeline.from_preset(model, device=device, dtype=dtype, **{**args, "local_files_only": True})
        finally:
            with self._lock:
                self._download_stop = None
        info = model_info(pipe, model, device)
        info.why = "the released weights were downloaded from this page"
        with self._lock:
            self.pipe, self.info = pipe, info
        return info

    def stop_download(self) -> bool:
        """Asks a running `download_and_load` to stop at its next progress report; True when one was running."""
        with self._lock:
            stop = self._download_stop
        if stop is None:
            return False
        stop.set()
        return True

    @property
    def defaults(self) -> dict[str, Any]:
        """The model's default steps, guidance, sampler, coupling, text temperature and partner weight."""
        d = self.pipe.config.defaults if self.pipe is not None else SamplingDefaults()
        return {
            "steps": d.steps,
            "guidance": d.guidance_scale,
            "sampler": d.sampler,
            "coupling": d.coupling,
            "text_temperature": d.text_temperature,
            "partner_weight": d.partner_weight,
        }

    @property
    def outputs(self) -> list[str]:
        """The output modalities this model can generate (all four for the tiny and official models)."""
        if self.pipe is None:
            return list(MODALITY_NAMES)
        return [m.value for m in ALL_MODALITIES if self.pipe.model.can_generate(m)]

    def request_stop(self, session: str) -> bool:
        """Asks the run of `session` to stop at its next sampler step; True when one was running."""
        with self._lock:
            event = self._stops.get(session)
        if event is None:
            return False
        event.set()
        return True

    def run(
        self,
        request: GenerationRequest,
        progress: ProgressFn | None = None,
        session: str = "",
        loading: LoadingFn | None = None,
    ) -> Run:
        """Generates `request` into a new run folder.

        Args:
            request: the inputs, outputs and settings.
            progress: called with (steps done, total steps) after each sampler step.
            session: an id under which `request_stop` can cancel this run.
            loading: called with (component, bytes) before a component not yet in memory is loaded (the released
                model loads each part on first use: seconds each).
        Returns:
            the Run (outputs written with `codi.results.save_result`, inputs copied, request.json with the seed used).
        Raises:
            Cancelled when stopped; InputError / MediaError for bad requests.
        """
        if self.pipe is None:
            raise WeightsNotFoundError(self.info.problem or "no model is loaded")
        stop = threading.Event()
        with self._lock:
            self._stops[session] = stop

        def on_step(done: int, total: int) -> None:
            if stop.is_set():
                raise Cancelled("generation cancelled")
            if progress is not None:
                progress(done, total)

        def on_load(name: str, size: int) -> None:
            if stop.is_set():  # cancelled before a part is read: do not read it
                raise Cancelled("generation cancelled")
            if loading is not None:
                loading(name, size)

        try:
            with self.pipe.components.reporting_loads(on_load):  # one generation at a time (the app's queue)
                result = self.pipe(**request.pipeline_kwargs(), progress=on_step)
        finally:
            with self._lock:
                if self._stops.get(session) is stop:
                    del self._stops[session]
        return self._write_run(request, result)

    def _write_run(self, request: GenerationRequest, result: GenerationResult) -> Run:
        folder = self.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True)
        used = GenerationRequest.from_dict({**request.to_dict(), "seed": result.seed})
        used.steps = result.params.get("steps", used.steps)
        used.guidance = result.params.get("guidance_scale", used.guidance)
        used.sampler = result.params.get("sampler", used.sampler)
        used.coupling = result.params.get("coupling", used.coupling)
        used.text_temperature = result.params.get("text_temperature", used.text_temperature)
        used.partner_weight = result.params.get("partner_weight", used.partner_weight)
        stored = GenerationRequest.from_dict(used.to_dict())
        for name in INPUT_FILE_MODALITIES:  # keep the exact input bytes: a run can be replayed from its folder
            src = getattr(request, name)
            if src:
                rel = f"inputs/{name}{Path(src).suffix.lower() or '.bin'}"
                (folder / "inputs").mkdir(exist_ok=True)
                shutil.copyfile(src, folder / rel)
                setattr(stored, name, rel)
                setattr(used, name, str(folder / rel))
        files = save_result(result, folder, {k: v for k, v in stored.inputs().items() if k != "text"})
        (folder / REQUEST_FILE).write_text(json.dumps(stored.to_dict(), indent=2) + "\n")
        self._prune(keep=folder)
        return Run(folder=folder, request=used, result=result, files=files)

    def _prune(self, keep: Path) -> None:
        """Keeps the newest `keep_runs` run folders, `keep` among them (saved recordings are copies elsewhere)."""
        runs = sorted((p for p in self.runs_dir.iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
        for old in runs[: max(0, len(runs) + 1 - self.keep_runs)]:
            shutil.rmtree(old, ignore_errors=True)


def model_info(pipe: CoDiPipeline, model: str, device: str) -> ModelInfo:
    """Describes a loaded pipeline for the banner."""
    name = pipe.config.name
    random_weights = "RANDOM" in pipe.source
    purpose = PURPOSES.get(name, pipe.config.description)
    if model not in ("tiny", "official"):
        purpose = f"{pipe.config.description} (checkpoint folder {model})"
    dtype = str(pipe.dtype).removeprefix("torch.")  # what 'auto' resolved to
    return ModelInfo(name, pipe.source, purpose, str(device), dtype, random_weights=random_weights)


def read_run_request(folder: str | Path) -> GenerationRequest:
    """The request stored in a run or recording folder, its input paths made absolute."""
    folder = Path(folder).resolve()
    request = GenerationRequest.from_dict(json.loads((folder / REQUEST_FILE).read_text()))
    for name in INPUT_FILE_MODALITIES:
        rel = getattr(request, name)
        if rel:
            path = (folder / rel).resolve()
            if not path.is_relative_to(folder):  # a hand-edited request.json cannot reach other files
                raise InputError(f"{folder / REQUEST_FILE}: its {name} input {rel!r} is outside the folder")
            setattr(request, name, str(path))
    return request
