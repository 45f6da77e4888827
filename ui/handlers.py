"""Thin event handlers: form values -> engine / recordings / examples -> component updates, errors as messages."""

from __future__ import annotations

import contextlib
import functools
import html
import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from codi.components import COMPONENT_LABELS
from codi.conditions import InputError
from codi.hub import WeightsNotFoundError, format_size
from codi.loading import CorruptCheckpointError
from codi.media import MediaError
from codi.pipeline import NotEnoughMemoryError
from ui.engine import MODALITY_NAMES, RESULT_FILE, Cancelled, Engine, GenerationRequest, Run
from ui.examples import Example, export_example, load_examples
from ui.recordings import Recording, delete_recording, find_recording, list_recordings, save_recording
from ui.theme import banner_html
from ui.thumbnails import with_caption

log = logging.getLogger(__name__)


def time_left(seconds: float) -> str:
    """' · about 40 s left', or in minutes from 90 s on."""
    return f" · about {seconds:.0f} s left" if seconds < 90 else f" · about {seconds / 60:.0f} min left"


class RunProgress:
    """What the progress bar says during a generation: which part is loading (the released model reads each on
    first use, seconds to minutes), the sampler's steps with the time left, decoding. The time left comes from the
    steps after the first, so that encoding and loading (before the first step ends) do not count as sampling."""

    def __init__(self, progress: Callable[..., Any], clock: Callable[[], float] = time.perf_counter) -> None:
        self.progress, self.clock = progress, clock
        self.done, self.total, self.first_step_at = 0, 0, 0.0
        progress(0, desc="Encoding inputs")

    def loading(self, component: str, size: int) -> None:
        where = (self.done, self.total) if self.total else 0
        label = COMPONENT_LABELS.get(component, component)
        self.progress(where, desc=f"Loading the {label} ({format_size(size)})", unit="steps")

    def step(self, done: int, total: int) -> None:
        now = self.clock()
        if done == 1:
            self.first_step_at = now
        self.done, self.total = done, total
        if done == total:
            desc = "Decoding"
        elif done == 1:
            desc = "Denoising"
        else:
            desc = "Denoising" + time_left((now - self.first_step_at) / (done - 1) * (total - done))
        self.progress((done, total), desc=desc, unit="steps")


# Order of the form components (create_demo wires them in this order; the API takes these names).
FORM_FIELDS = (
    "text",
    "image",
    "video",
    "audio",
    "text_weight",
    "image_weight",
    "video_weight",
    "audio_weight",
    "outputs",
    "steps",
    "guidance",
    "sampler",
    "seed",
    "randomize_seed",
    "coupling",
    "num_samples",
    "text_temperature",
    "partner_weight",
)
# Order of the result components that `generate` updates.
RESULT_FIELDS = ("summary", "text_out", "image_out", "video_out", "audio_out", "samples", "files", "params", "seed",
                 "run_folder")  # fmt: skip
# What the example cache keeps of a run, and what `show_example` sets from it.
EXAMPLE_FIELDS = ("summary", "text_out", "files", "params", "seed")
EXAMPLE_VIEW_FIELDS = ("text_out", "image_out", "video_out", "audio_out", "samples", "files", "save_btn", "run_folder",
                       "save_status")  # fmt: skip
# Order of the result components `show` reads, and of those whose visibility it sets, after a run.
SHOWN_FIELDS = ("text_out", "image_out", "video_out", "audio_out", "samples", "files", "run_folder")
VIEW_FIELDS = ("text_out", "image_out", "video_out", "audio_out", "samples", "files", "save_btn")
DETAIL_FIELDS = ("selected", "detail", "text_out", "image_out", "video_out", "audio_out", "files", "params", "actions")
USER_ERRORS = (
    InputError,
    MediaError,
    WeightsNotFoundError,
    FileNotFoundError,
    NotEnoughMemoryError,
    CorruptCheckpointError,
)


@contextlib.contextmanager
def user_errors(action: str) -> Iterator[None]:
    """Turns engine errors into gr.Error messages (never a traceback in the page; the log keeps it)."""
    try:
        yield
    except gr.Error:
        raise
    except USER_ERRORS as e:
        raise gr.Error(str(e), title=f"Cannot {action}", print_exception=False) from None
    except Exception as e:  # an engine bug: keep the form, say what failed, log the traceback
        log.exception("%s failed", action)
        message = f"{type(e).__name__}: {str(e)[:300]} (details in the server log)"
        raise gr.Error(message, title=f"Could not {action}", print_exception=False) from None


def form_to_request(values: dict[str, Any]) -> GenerationRequest:
    """Form values by FORM_FIELDS name -> a GenerationRequest (random seed when `randomize_seed`)."""
    seed = values.get("seed")
    if values.get("randomize_seed") or seed in (None, ""):
        seed = None
    outputs = values.get("outputs") or []
    if isinstance(outputs, str):
        outputs = [o.strip() for o in outputs.split(",") if o.strip()]
    return GenerationRequest(
        text=values.get("text") or "",
        image=values.get("image") or None,
        video=values.get("video") or None,
        audio=values.get("audio") or None,
        weights={m: _field(f"{m}_weight", values.get(f"{m}_weight", 1.0) or 0.0) for m in MODALITY_NAMES},
        outputs=list(outputs),
        steps=_field("steps", values.get("steps"), int),
        guidance=_field("guidance", values.get("guidance")),
        sampler=values.get("sampler") or None,
        seed=_field("seed", seed, int),
        coupling=values.get("coupling") or None,
        num_samples=_field("num_samples", values.get("num_samples") or 1, int),
        text_temperature=_field("text_temperature", values.get("text_temperature")),
        partner_weight=_field("partner_weight", values.get("partner_weight")),
    )


def _field(name: str, value: Any, kind: type = float) -> Any:
    """A form number as `kind` (None stays None); NaN, infinity or text (the API takes any JSON) is an InputError."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be a number, got {value!r:.40}") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {value}")
    return int(number) if kind is int else number


def request_to_form(request: GenerationRequest, defaults: dict[str, Any]) -> list[Any]:
    """A request -> values for the FORM_FIELDS components (model defaults where the request has none)."""
    values = {
        "text": request.text,
        "image": request.image,
        "video": request.video,
        "audio": request.audio,
        **{f"{m}_weight": float(request.weights.get(m, 1.0)) for m in MODALITY_NAMES},
        "outputs": list(request.outputs),
        "steps": request.steps if request.steps is not None else defaults["steps"],
        "guidance": request.guidance if request.guidance is not None else defaults["guidance"],
        "sampler": request.sampler or defaults["sampler"],
        "seed": request.seed if request.seed is not None else 0,
        "randomize_seed": request.seed is None,
        "coupling": request.coupling or defaults["coupling"],
        "num_samples": request.num_samples,
        "text_temperature": (
            request.text_temperature if request.text_temperature is not None else defaults["text_temperature"]
        ),
        "partner_weight": (
            request.partner_weight if request.partner_weight is not None else defaults["partner_weight"]
        ),
    }
    return [values[k] for k in FORM_FIELDS]


def summary_markdown(request: GenerationRequest, params: dict[str, Any], timings: dict[str, float], note: str) -> str:
    """One line of what was made and how, then the inputs with their weights."""
    outs = " + ".join(params.get("outputs", request.outputs))
    total = timings.get("total_s", 0.0)
    line = (
        f"**{outs}** in {total:.2f} s · seed `{params.get('seed')}` · {params.get('steps')} "
        f"{params.get('sampler')} steps · guidance {params.get('guidance_scale')} · coupling {params.get('coupling')}"
        + (
            f" · text temperature {params['text_temperature']:g}"
            if "text" in params.get("outputs", []) and "text_temperature" in params
            else ""
        )
        + (
            f" · partner weight {params['partner_weight']:g}"
            if len(params.get("outputs", [])) > 1 and params.get("partner_weight")
            else ""
        )
    )
    weights = dict(params.get("weights") or [])
    parts = []
    for name, value in request.inputs().items():
        shown = f"“{value}”" if name == "text" else Path(value).name
        parts.append(f"{name} {shown} (weight {weights.get(name, request.weights.get(name, 1.0)):g})")
    inputs = "from " + " + ".join(parts) if parts else "unconditional (no inputs)"
    return f"{line}  \n{inputs}{note}"


def _media_updates(texts: list[str], image: Path | None, video: Path | None, audio: Path | None) -> list[Any]:
    text_value = texts[0] if len(texts) == 1 else "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
    return [
        gr.update(value=text_value, visible=bool(texts)),
        gr.update(value=str(image) if image else None, visible=image is not None),
        gr.update(value=str(video) if video else None, visible=video is not None),
        gr.update(value=str(audio) if audio else None, visible=audio is not None),
    ]


class Studio:
    """The handlers of one Studio page, bound to an engine and to the recordings and examples folders."""

    def __init__(self, engine: Engine, recordings_dir: str | Path, examples_path: str | Path) -> None:
        self.engine = engine
        self.recordings_dir = Path(recordings_dir)
        self.examples_path = Path(examples_path)

    # -- generation --------------------------------------------------------------------------------------
    def generate(
        self,
        text: str | None = None,
        image: str | None = None,
        video: str | None = None,
        audio: str | None = None,
        text_weight: float = 1.0,
        image_weight: float = 1.0,
        video_weight: float = 1.0,
        audio_weight: float = 1.0,
        outputs: list[str] | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        randomize_seed: bool = False,
        coupling: str | None = None,
        num_samples: int = 1,
        text_temperature: float | None = None,
        partner_weight: float | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio injects the tracker through this default)
    ) -> list[Any]:
        """Generates any combination of text, image, video and audio with CoDi from any combination of inputs.

        Args:
            text: a prompt (empty: no text input).
            image: an input image file (path or URL), or None.
            video: an input video file, or None.
            audio: an input audio file (wav, flac, ogg or mp3), or None.
            text_weight: how much the text counts in the mix of inputs (the weights are normalised to sum 1).
            image_weight: how much the image counts.
            video_weight: how much the video counts.
            audio_weight: how much the audio counts.
            outputs: which outputs to generate together: any of "text", "image", "video", "audio".
            steps: sampler steps (None: the model's default).
            guidance: classifier-free guidance scale (1 turns it off; None: the model's default).
            sampler: "ddim" (as released) or "dpm" (DPM-Solver++).
            seed: the noise seed (None or randomize_seed: a random one, returned).
            randomize_seed: draw a new seed.
            coupling: "official" or "paper": how co-generated outputs attend to each other.
            num_samples: how many samples of each output.
            text_temperature: how freely generated text is sampled (lower: the likeliest caption).
            partner_weight: how much co-generated outputs follow each other (0: CoDi as published).
        Returns:
            the summary, the text, the image, video and audio files, the samples, every file, the parameters
            (result.json), the seed used and the run folder (RESULT_FIELDS).
        """
        values = {k: v for k, v in locals().items() if k in FORM_FIELDS}  # the parameters above, by name
        with user_errors("generate"):  # a NaN or text where a number belongs (the API takes any JSON) is a message
            req = form_to_request(values)
        if not req.outputs:
            raise gr.Error("Tick at least one output (text, image, video or audio).", title="Nothing to generate")
        session = getattr(request, "session_hash", None) or ""
        status = RunProgress(progress)
        with user_errors("generate"):
            try:
                run = self.engine.run(req, status.step, session=session, loading=status.loading)
            except Cancelled:
                gr.Warning("Generation cancelled; nothing was changed.")
                return [gr.skip() for _ in RESULT_FIELDS]
        return self.result_updates(run)

    def result_updates(self, run: Run) -> list[Any]:
        """Plain values for RESULT_FIELDS showing a finished run (API clients get these as they are)."""
        r = run.result
        note = " · **random weights**" if self.engine.info.random_weights else ""
        texts = r.texts
        text = texts[0] if len(texts) == 1 else "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
        samples = sorted(run.folder.glob("image*.png")) + sorted(run.folder.glob("video*.mp4"))
        return [
            summary_markdown(run.request, r.params, r.timings, note),
            text or None,
            *(str(p) if p else None for p in (run.output("image"), run.output("video"), run.output("audio"))),
            [str(p) for p in samples] if r.params.get("num_samples", 1) > 1 else None,
            [str(p) for p in run.files],
            json.loads((run.folder / RESULT_FILE).read_text()),
            r.seed,
            str(run.folder),
        ]

    def show(
        self,
        text: str | None,
        image: str | None,
        video: str | None,
        audio: str | None,
        samples: list[Any] | None,
        files: list[Any] | None,
        run_folder: str | None,
    ) -> list[Any]:
        """After a run or a cached example: shows the result components that hold something, hides the others
        (VIEW_FIELDS); Save is offered while the run's folder is still on disk."""
        flags = [bool(text), *(v is not None for v in (image, video, audio)), bool(samples), bool(files)]
        can_save = bool(run_folder) and (Path(run_folder) / RESULT_FILE).exists()
        return [*(gr.update(visible=v) for v in flags), gr.update(interactive=can_save)]

    def show_example(self, text: str | None, files: list[str] | None) -> list[Any]:
        """A cached example's result shown from its files (EXAMPLE_VIEW_FIELDS); Save is off, since the run is not
        on this machine: Generate reproduces it (same request and seed)."""
        by_name = {Path(f).name: f for f in files or []}
        media = [by_name.get(n) for n in ("image.png", "video.mp4", "audio.wav")]
        samples = sorted(
            f for n, f in by_name.items() if n.startswith(("image", "video")) and n[-4:] in (".png", ".mp4")
        )
        many = len(samples) > sum(m is not None for m in media[:2])
        return [
            gr.update(visible=bool(text)),
            *(gr.update(value=m, visible=m is not None) for m in media),
            gr.update(value=samples if many else None, visible=many),
            gr.update(visible=bool(files)),
            gr.update(interactive=False),
            None,
            "An example's stored result: press **Generate** to run it here (same seed, same result) and save it.",
        ]

    def example_runner(self, generate: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
        """`generate` for the cached example gallery: takes the example's card first (the gallery's picture,
        not an input of the model), returns EXAMPLE_FIELDS (Gradio's example cache keeps every file of the run,
        but cannot read back an absent image, video or audio; `show_example` finds them among the files), and
        fails instead of returning a cancelled run so that none is cached."""

        @functools.wraps(generate)
        def run_example(card: str | None, *args: Any, **kwargs: Any) -> list[Any]:
            updates = generate(*args, **kwargs)
            if all(isinstance(u, dict) and u == gr.skip() for u in updates):
                raise gr.Error("The example was cancelled; click it again to run it.", title="Cancelled")
            values = dict(zip(RESULT_FIELDS, updates))
            return [values[k] for k in EXAMPLE_FIELDS]

        signature = inspect.signature(generate)
        card = inspect.Parameter("card", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="str | None")
        run_example.__signature__ = signature.replace(parameters=[card, *signature.parameters.values()])
        return run_example

    def cancel(self, request: gr.Request | None = None) -> None:
        """Stops this page's running generation at its next sampler step."""
        if self.engine.request_stop(getattr(request, "session_hash", None) or ""):
            gr.Info("Cancelling…", duration=3)

    # -- the released weights, downloaded from the page ---------------------------------------------------------
    def download(self, progress: gr.Progress = gr.Progress()) -> list[Any]:  # noqa: B008 (gradio's tracker)
        """Downloads the released weights and loads them in place; returns (banner, download row, status)."""
        if self.engine.pipe is not None:
            return self.page_state() + [""]
        start = time.perf_counter()

        def on_bytes(done: int, total: int, filename: str) -> None:
            seconds = time.perf_counter() - start
            desc = f"Downloading {Path(filename).name}: {format_size(done)} of {format_size(total)}"
            if done and seconds > 3:
                desc += time_left((total - done) * seconds / done)
            progress(done / max(total, 1), desc=desc)

        progress(0, desc="Asking the Hugging Face Hub")
        with user_errors("download the released weights"):
            try:
                info = self.engine.download_and_load(on_bytes)
            except Cancelled:
                gr.Warning(
                    "Download cancelled. Files already complete stay in the cache; the next download skips them."
                )
                return [gr.skip(), gr.skip(), "Download cancelled."]
        gr.Info(f"Loaded {info.name}: press Generate.", duration=6)
        return [banner_html(info), gr.update(visible=False), f"Downloaded and loaded: {html.escape(info.source)}"]

    def cancel_download(self) -> None:
        """Stops a running download at its next progress report."""
        if self.engine.stop_download():
            gr.Info("Cancelling the download…", duration=3)

    def page_state(self) -> list[Any]:
        """The banner and the download row as the engine stands now (a page opened after a download)."""
        return [banner_html(self.engine.info), gr.update(visible=self.engine.can_download)]

    # -- recordings --------------------------------------------------------------------------------------
    def save(self, run_folder: str | None, title: str) -> tuple[str, Any, list[str]]:
        """Saves the last run as a recording; returns (status, history gallery, history ids)."""
        if not run_folder:
            raise gr.Error("Generate something first, then save it.", title="Nothing to save")
        with user_errors("save the recording"):
            rec = save_recording(run_folder, self.recordings_dir, self.engine.info, title)
        gallery, ids = self.history()
        return f"Saved **{rec.title}** to `{rec.folder}`", gallery, ids

    def history(self) -> tuple[list[tuple[str, str]], list[str]]:
        """The History gallery value (thumbnail, caption) and the recording ids in the same order."""
        recs = list_recordings(self.recordings_dir)
        return [(str(r.thumbnail), r.caption()) for r in recs], [r.id for r in recs]

    def select_recording(self, ids: list[str], evt: gr.SelectData) -> list[Any]:
        """Shows the recording clicked in the History gallery; returns updates for DETAIL_FIELDS."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        with user_errors("open the recording"):
            rec = find_recording(self.recordings_dir, ids[index])
        return self.detail_updates(rec)

    def detail_updates(self, rec: Recording) -> list[Any]:
        texts = [rec.text] if rec.output("text") else []
        media = _media_updates(texts, rec.output("image"), rec.output("video"), rec.output("audio"))
        params = rec.result.get("params", {})
        summary = summary_markdown(rec.request, params, rec.result.get("timings", {}), "")
        detail = f"### {rec.title}\nSaved {rec.created} · model {rec.model or '?'} · `{rec.folder.name}`  \n{summary}"
        files = [str(p) for p in rec.files()]
        return [rec.id, detail, *media, gr.update(value=files, visible=True), rec.result, gr.update(visible=True)]

    def reload(self, rec_id: str | None) -> list[Any]:
        """A recording's request into the form (its exact seed and input files); the Studio tab is selected."""
        if not rec_id:
            raise gr.Error("Pick a recording in the gallery first.", title="No recording selected")
        with user_errors("reload the recording"):
            rec = find_recording(self.recordings_dir, rec_id)
        return [*request_to_form(rec.request, self.engine.defaults), gr.Tabs(selected="studio")]

    def export(self, rec_id: str | None, title: str) -> str:
        """Adds the selected recording to examples.json; returns the status (the gallery shows it after a
        restart, since cached examples are kept by their place in the gallery)."""
        if not rec_id:
            raise gr.Error("Pick a recording in the gallery first.", title="No recording selected")
        with user_errors("export the example"):
            example = export_example(find_recording(self.recordings_dir, rec_id), self.examples_path, title)
        return (
            f"Exported as example **{example.title}** to `{self.examples_path}`; "
            "it joins the example gallery when the app restarts."
        )

    def delete(self, rec_id: str | None) -> list[Any]:
        """Deletes the selected recording; returns (status, history gallery, ids, then cleared DETAIL_FIELDS)."""
        if not rec_id:
            raise gr.Error("Pick a recording in the gallery first.", title="No recording selected")
        with user_errors("delete the recording"):
            delete_recording(self.recordings_dir, rec_id)
        gallery, ids = self.history()
        cleared = [None, "", *_media_updates([], None, None, None), gr.update(value=None, visible=False), None]
        cleared.append(gr.update(visible=False))
        return [f"Deleted `{rec_id}`", gallery, ids, *cleared]

    # -- examples ----------------------------------------------------------------------------------------
    def example_list(self) -> list[Example]:
        examples = load_examples(self.examples_path, self.engine.info.name)
        return examples or load_examples(self.examples_path)

    def example_rows(self, cards_dir: Path) -> tuple[list[Example], list[list[Any]]]:
        """The gallery's examples and their rows: a captioned card (drawn into `cards_dir`), then the FORM_FIELDS
        values of the example's request (a fixed seed, so a cached result is what Generate would give)."""
        found = [e for e in self.example_list() if e.thumbnail is not None and e.thumbnail.exists()]
        cards_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for e in found:
            card = cards_dir / f"{e.id}.png"
            with_caption(Image.open(e.thumbnail), e.caption()).save(card)
            rows.append([str(card), *request_to_form(e.request, self.engine.defaults)])
        return found, rows

    def on_load(self) -> tuple[Any, list[str]]:
        """Page load: a fresh History gallery (recordings may have changed since the app started)."""
        return self.history()
