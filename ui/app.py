"""`create_demo(engine)`: the CoDi Studio page (Studio, History and About tabs) as gradio Blocks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from codi.pipeline import MAX_SEED
from ui.engine import Engine
from ui.examples import DEFAULT_EXAMPLES
from ui.handlers import (
    DETAIL_FIELDS,
    EXAMPLE_FIELDS,
    EXAMPLE_VIEW_FIELDS,
    FORM_FIELDS,
    RESULT_FIELDS,
    SHOWN_FIELDS,
    VIEW_FIELDS,
    Studio,
)
from ui.theme import CSS, banner_html, header_html, studio_theme
from ui.zerogpu import on_gpu

Components = dict[str, Any]
OUTPUT_CHOICES = [("Text", "text"), ("Image", "image"), ("Video", "video"), ("Audio", "audio")]
PLACEHOLDER = '<div class="placeholder">Results appear here. Pick inputs and outputs, then press Generate.</div>'


def _title(text: str, hint: str = "") -> str:
    return f'<div class="section-title">{text} <span class="hint">{hint}</span></div>'


def _weight(label: str) -> gr.Slider:
    return gr.Slider(0, 2, value=1.0, step=0.05, label=label, min_width=200, elem_id=f"{label.lower()}-weight")


def _inputs(defaults: dict[str, Any], outputs: list[str]) -> Components:
    """The form: inputs with weights, outputs, advanced settings (FORM_FIELDS) and the two buttons."""
    c: Components = {}
    gr.HTML(_title("Inputs", "any combination, or none"))
    c["text"] = gr.Textbox(
        label="Text", lines=2, placeholder="Describe it, e.g. “a red circle moving up”", elem_id="text-in"
    )
    with gr.Row(equal_height=True):
        c["image"] = gr.Image(
            label="Image",
            type="filepath",
            format="png",
            image_mode=None,  # keep alpha: the engine composites it on white
            sources=["upload", "clipboard"],
            height=190,
            min_width=160,
            elem_classes=["pixelated"],
            elem_id="image-in",
        )
        c["video"] = gr.Video(
            label="Video", sources=["upload"], height=190, min_width=160, elem_classes=["pixelated"], elem_id="video-in"
        )
    c["audio"] = gr.Audio(
        label="Audio (file or microphone)", type="filepath", sources=["upload", "microphone"], elem_id="audio-in"
    )
    with gr.Accordion("Input weights: how much each input counts in the mix", elem_id="weights"), gr.Row():
        for name in ("Text", "Image", "Video", "Audio"):
            c[f"{name.lower()}_weight"] = _weight(name)
    gr.HTML(_title("Outputs", "any combination, generated together"))
    choices = [(label, value) for label, value in OUTPUT_CHOICES if value in outputs]
    default = "image" if "image" in outputs else choices[0][1]
    c["outputs"] = gr.CheckboxGroup(choices, value=[default], label="Generate", elem_id="outputs")
    with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
        with gr.Row():
            c["steps"] = gr.Slider(1, 200, value=defaults["steps"], step=1, label="Steps", elem_id="steps")
            c["guidance"] = gr.Slider(
                0, 15, value=defaults["guidance"], step=0.5, label="Guidance", info="classifier-free guidance; 1 = off"
            )
        with gr.Row():
            c["sampler"] = gr.Radio(
                [("DPM-Solver++", "dpm"), ("DDIM (official)", "ddim")],
                value=defaults["sampler"],
                label="Sampler",
                info=f"DPM-Solver++ at {defaults['steps']} steps (default) scores as DDIM at 50 on the eval",
            )
            c["coupling"] = gr.Radio(
                [("Official code", "official"), ("Paper", "paper")],
                value=defaults["coupling"],
                label="Joint coupling",
                info="how co-generated outputs attend to each other",
            )
        with gr.Row(equal_height=True):
            c["seed"] = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed")
            c["randomize_seed"] = gr.Checkbox(value=True, label="Randomize seed", elem_id="randomize-seed")
            c["num_samples"] = gr.Slider(1, 8, value=1, step=1, label="Samples")
        c["text_temperature"] = gr.Slider(
            0.05,
            2.0,
            value=defaults["text_temperature"],
            step=0.05,
            label="Text temperature",
            info="how freely generated text is sampled (official: 1; lower = the likeliest caption)",
        )
        c["partner_weight"] = gr.Slider(
            0.0,
            20.0,
            value=defaults["partner_weight"],
            step=0.5,
            label="Partner weight",
            info="with several outputs: how much each output is also conditioned on the others (0 = CoDi as "
            "published; higher = outputs agree more)",
            elem_id="partner-weight",
        )
    with gr.Row():
        c["generate_btn"] = gr.Button("Generate", variant="primary", size="lg", scale=3, elem_id="generate-btn")
        c["cancel_btn"] = gr.Button("Cancel", variant="secondary", size="lg", scale=1, elem_id="cancel-btn")
    c["run_status"] = gr.HTML("", elem_id="run-status")  # the progress bar shows here too, near the button
    return c


def _media_outputs(prefix: str = "") -> Components:
    c: Components = {}
    c["text_out"] = gr.Textbox(
        label="Text", lines=2, interactive=False, visible=False, buttons=["copy"], elem_id=f"{prefix}text-out"
    )
    with gr.Row(equal_height=True):
        c["image_out"] = gr.Image(
            label="Image",
            type="filepath",
            format="png",
            interactive=False,
            visible=False,
            height=300,
            elem_classes=["pixelated", "result-media"],
            elem_id=f"{prefix}image-out",
            buttons=["download", "fullscreen"],
        )
        c["video_out"] = gr.Video(
            label="Video",
            interactive=False,
            visible=False,
            height=300,
            loop=True,
            elem_classes=["pixelated", "result-media"],
            elem_id=f"{prefix}video-out",
            buttons=["download"],
        )
    c["audio_out"] = gr.Audio(
        label="Audio",
        type="filepath",
        interactive=False,
        visible=False,
        elem_id=f"{prefix}audio-out",
        buttons=["download"],
    )
    return c


def _results() -> Components:
    """The result panel (RESULT_FIELDS) and the save-recording row."""
    gr.HTML(_title("Result"))
    c: Components = {"summary": gr.Markdown(PLACEHOLDER, label="Summary", elem_id="result-summary")}
    c.update(_media_outputs())
    c["samples"] = gr.Gallery(label="All samples", visible=False, columns=4, height="auto", elem_classes=["pixelated"])
    c["files"] = gr.File(label="Download", file_count="multiple", visible=False, interactive=False, elem_id="files")
    with gr.Row(equal_height=True):
        c["rec_title"] = gr.Textbox(
            placeholder="Recording title (optional)", show_label=False, scale=3, container=False
        )
        c["save_btn"] = gr.Button("Save recording", interactive=False, scale=1, elem_id="save-btn")
    c["save_status"] = gr.Markdown("", elem_id="save-status")
    with gr.Accordion("Every parameter (result.json)", open=False):
        c["params"] = gr.JSON(label="Parameters", elem_id="params")
    c["run_folder"] = gr.State(None)
    return c


def _history() -> Components:
    """The History tab: recordings gallery on the left, the selected recording and its actions on the right."""
    c: Components = {"history_ids": gr.State([]), "selected": gr.State(None)}
    with gr.Row(elem_id="history-row"):
        with gr.Column(scale=3):
            with gr.Row(equal_height=True):
                gr.HTML(_title("Saved recordings", "click one to open it"))
                c["refresh_btn"] = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_id="refresh-history")
            c["history_gallery"] = gr.Gallery(
                label="Saved recordings",
                show_label=False,
                columns=3,
                height="auto",
                allow_preview=False,
                elem_id="history-gallery",
                fit_columns=False,
                buttons=[],
                object_fit="contain",
            )
        with gr.Column(scale=2):
            c["detail"] = gr.Markdown("Click a recording to see it here.", elem_id="history-detail")
            c.update(_media_outputs("hist-"))
            c["files"] = gr.File(label="Files", file_count="multiple", visible=False, interactive=False)
            with gr.Column(visible=False) as c["actions"]:
                c["regen_btn"] = gr.Button("Load into the form and regenerate", variant="primary", elem_id="regen-btn")
                with gr.Row(equal_height=True):
                    c["example_title"] = gr.Textbox(
                        placeholder="Example title (optional)", show_label=False, container=False, scale=3
                    )
                    c["export_btn"] = gr.Button("Export as example", scale=2, elem_id="export-btn")
                c["delete_btn"] = gr.Button("Delete recording", variant="stop", size="sm")
                with gr.Accordion("Every parameter (result.json)", open=False):
                    c["params"] = gr.JSON(label="Parameters")
            c["status"] = gr.Markdown("", elem_id="history-status")
    return c


ABOUT = """
### How it works
CoDi encodes every input (text, image, video, audio) into one shared space and mixes them with your weights
(“bridging alignment”); each requested output has its own diffusion model, and outputs asked for together are
sampled in one loop where they attend to each other (“latent alignment”; *Joint coupling* picks the released
code's variant or the paper's). Same inputs, settings and seed give the same result.

### Recordings
**Save recording** stores the inputs, the outputs and a JSON of every parameter in the recordings folder. The
**History** tab lists them; *Load into the form and regenerate* reproduces one exactly, and *Export as example* adds
it to the example gallery.

### API
Generation is the named endpoint `/generate` (“Use via API” at the bottom of the page lists its parameters):

```python
from gradio_client import Client

client = Client("http://127.0.0.1:7860/")
summary, text, image, video, audio, samples, files, params, seed = client.predict(
    text="a red circle moving up", outputs=["video", "audio"], seed=7, randomize_seed=False, api_name="/generate"
)
```
"""


def create_demo(
    engine: Engine,
    recordings_dir: str | Path = "recordings",
    examples_path: str | Path = DEFAULT_EXAMPLES,
    queue_size: int = 16,
    cache_examples: bool | None = None,
) -> gr.Blocks:
    """Builds the Studio page for `engine` (not launched: call `.launch(**launch_options(...))`).

    Args:
        engine: the loaded model (or one whose `info.problem` says why there is none).
        recordings_dir: where saved recordings go.
        examples_path: examples.json of the example gallery (exported examples are added to it).
        queue_size: how many requests may wait for the model (one runs at a time).
        cache_examples: keep each example's result after its first run, for every visitor (Gradio's lazy
            example cache); None: on a Space, or when GRADIO_CACHE_EXAMPLES is "true" or "lazy".
    """
    studio = Studio(engine, recordings_dir, examples_path)
    generate = on_gpu(studio.generate, engine.defaults["steps"])  # ZeroGPU when `spaces` is there, else unchanged
    # Gradio's upload cache: files older than a day removed every hour (it otherwise grows by each request's inputs)
    with gr.Blocks(title="CoDi Studio", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.HTML(header_html())
        page = _banner(engine)
        with gr.Tabs() as tabs:
            with gr.Tab("Studio", id="studio"):
                with gr.Row(elem_id="studio-row"):
                    with gr.Column(scale=5):
                        form = _inputs(engine.defaults, engine.outputs)
                    with gr.Column(scale=6):
                        result = _results()
                card = gr.Image(type="filepath", visible=False)  # the example gallery's picture column
                examples = _examples(studio, card, form, result, generate, cache_examples)
            with gr.Tab("History", id="history"):
                hist = _history()
            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT)
        _wire(demo, studio, tabs, form, result, hist, generate, examples)
        _wire_download(demo, studio, page)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo


def _banner(engine: Engine) -> Components:
    """The model banner, and under it, when the released weights are what is missing, their download."""
    from codi.hub import format_size, official_download_size

    c: Components = {"banner": gr.HTML(banner_html(engine.info), elem_id="banner")}
    size = format_size(official_download_size((engine.load_args or {}).get("official_variant", "fp16")))
    with gr.Row(visible=engine.can_download, elem_id="download-row") as c["download_row"]:
        c["download_btn"] = gr.Button(
            f"Download the released weights ({size})", variant="primary", scale=3, elem_id="download-btn"
        )
        c["download_cancel"] = gr.Button("Cancel download", scale=1, elem_id="download-cancel")
    c["download_status"] = gr.HTML("", elem_id="download-status")
    return c


def _wire_download(demo: gr.Blocks, studio: Studio, page: Components) -> None:
    outputs = [page["banner"], page["download_row"], page["download_status"]]
    page["download_btn"].click(
        studio.download,
        None,
        outputs,
        concurrency_limit=1,
        concurrency_id="download",
        show_progress_on=[page["download_status"]],
        api_visibility="private",
    )
    page["download_cancel"].click(studio.cancel_download, None, None, queue=False, api_visibility="private")
    demo.load(studio.page_state, None, outputs[:2], api_visibility="private")  # the model may have changed since


def _examples(
    studio: Studio, card: gr.Image, form: Components, result: Components, generate, cache: bool | None
) -> gr.Examples | None:
    """The example gallery: Gradio examples shown as captioned cards; a click loads the form and, when caching,
    shows the example's result (computed on its first click, then kept on disk for every visitor)."""
    cache = caches_examples(cache)
    folder = examples_cache_folder(studio)
    _, rows = studio.example_rows(folder / "cards")
    if not rows:
        return None
    form_inputs = [form[k] for k in FORM_FIELDS]
    # Gradio warns at start-up that some example inputs are empty: here that means "no image", which generate takes.
    warnings.filterwarnings("ignore", "Examples will be cached but not all input components", UserWarning)
    with _env("GRADIO_EXAMPLES_CACHE", str(folder)):  # results kept per model and example list, never mixed
        examples = gr.Examples(
            rows,
            inputs=[card, *form_inputs],
            outputs=_result_components(form, result, EXAMPLE_FIELDS),
            fn=studio.example_runner(generate),
            cache_examples=cache,
            cache_mode="lazy",
            visible_columns=[0],
            examples_per_page=24,
            label="Examples · click one to " + ("see its result" if cache else "load it into the form"),
            elem_id="examples-gallery",
        )
    # Gradio leaves an input that no example sets untouched; clear it so the form matches the example.
    unset = [inp for i, inp in enumerate(form_inputs) if all(row[i + 1] is None for row in rows)]
    if unset:
        examples.dataset.click(lambda: [None] * len(unset), None, unset, queue=False, api_visibility="private")
    return examples


def _result_components(form: Components, result: Components, fields: tuple[str, ...]) -> list[Any]:
    """The components of `fields` in order: the result panel's, and the form's seed (a run writes back its seed)."""
    return [form["seed"] if k == "seed" else result[k] for k in fields]


def caches_examples(requested: bool | None) -> bool:
    """Whether example results are cached: as `requested`, else on a Space or with GRADIO_CACHE_EXAMPLES set."""
    if requested is not None:
        return requested
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("GRADIO_CACHE_EXAMPLES", "").lower() in ("true", "lazy")


def examples_cache_folder(studio: Studio) -> Path:
    """Where the example cache lives: Gradio's cache folder, then one folder per model and example list, so a
    result computed by one model (or for an edited example) is never shown for another."""
    info = studio.engine.info
    model = [info.name, info.source, info.device, info.dtype, info.random_weights, FORM_FIELDS, EXAMPLE_FIELDS]
    model.append(studio.engine.defaults)  # an example leaving steps or the sampler to the model follows its defaults
    examples = studio.example_list()
    entries = [e.request.to_dict() | {"id": e.id} for e in examples]
    digest = hashlib.sha256(json.dumps([model, entries], sort_keys=True, default=str).encode())
    for e in examples:  # the input files' bytes count too
        for path in filter(None, (e.request.image, e.request.video, e.request.audio)):
            digest.update(Path(path).read_bytes() if Path(path).is_file() else path.encode())
    base = Path(os.environ.get("GRADIO_EXAMPLES_CACHE", ".gradio/cached_examples"))
    return base / f"{info.name}-{digest.hexdigest()[:12]}"


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _wire(demo, studio: Studio, tabs, form: Components, result: Components, hist: Components, generate, examples):
    form_inputs = [form[k] for k in FORM_FIELDS]
    result_outputs = _result_components(form, result, RESULT_FIELDS)
    run = {
        "concurrency_limit": 1,
        "concurrency_id": "model",
        "show_progress_on": [result["summary"], form["run_status"]],
    }
    view = [result[k] for k in VIEW_FIELDS]
    shown = [result[k] for k in SHOWN_FIELDS]
    gen = form["generate_btn"].click(
        generate, form_inputs, result_outputs, api_name="generate", trigger_mode="once", **run
    )
    gen.success(studio.show, shown, view, api_visibility="private")
    regen = (
        hist["regen_btn"]
        .click(studio.reload, hist["selected"], [*form_inputs, tabs], api_visibility="private")
        .then(generate, form_inputs, result_outputs, api_visibility="private", **run)
    )
    regen.success(studio.show, shown, view, api_visibility="private")
    running = [gen, regen]
    if examples is not None and examples.cache_event is not None:  # a cached example loaded or just computed
        example_view = [result[k] for k in EXAMPLE_VIEW_FIELDS]
        examples.cache_event.success(
            studio.show_example, [result["text_out"], result["files"]], example_view, api_visibility="private"
        )
        running.append(examples.cache_event)
    form["cancel_btn"].click(studio.cancel, None, None, cancels=running, queue=False, api_visibility="private")
    history_out = [hist["history_gallery"], hist["history_ids"]]
    result["save_btn"].click(
        studio.save,
        [result["run_folder"], result["rec_title"]],
        [result["save_status"], *history_out],
        api_visibility="private",
    )
    hist["refresh_btn"].click(studio.history, None, history_out, api_visibility="private")
    detail = [hist[k] for k in DETAIL_FIELDS]
    hist["history_gallery"].select(studio.select_recording, hist["history_ids"], detail, api_visibility="private")
    hist["export_btn"].click(
        studio.export, [hist["selected"], hist["example_title"]], hist["status"], api_visibility="private"
    )
    hist["delete_btn"].click(
        studio.delete, hist["selected"], [hist["status"], *history_out, *detail], api_visibility="private"
    )
    demo.load(studio.on_load, None, history_out, api_visibility="private")


def launch_options(
    engine: Engine,
    recordings_dir: str | Path = "recordings",
    examples_path: str | Path = DEFAULT_EXAMPLES,
    **kwargs: Any,
) -> dict[str, Any]:
    """Keyword arguments for `demo.launch`: theme, CSS, the folders the page may serve files from, no SSR."""
    folders = (recordings_dir, engine.runs_dir, Path(examples_path).parent)
    allowed = [str(Path(p).resolve()) for p in folders]
    return {
        "theme": studio_theme(),
        "css": CSS,
        "allowed_paths": allowed,
        "footer_links": ["api", "settings"],
        "ssr_mode": False,
        "show_error": True,
        **kwargs,
    }
