"""The Studio's look: a Gradio theme with locally served fonts, its CSS, and the model banner."""

from __future__ import annotations

import html

import gradio as gr

from ui.engine import ModelInfo


def studio_theme() -> gr.themes.Base:
    """Soft indigo/pink theme; fonts are the ones gradio ships (no font CDN)."""
    return gr.themes.Soft(
        primary_hue="indigo",
        secondary_hue="pink",
        neutral_hue="slate",
        font=(gr.themes.LocalFont("IBM Plex Sans"), "ui-sans-serif", "system-ui", "sans-serif"),
        font_mono=(gr.themes.LocalFont("IBM Plex Mono"), "ui-monospace", "monospace"),
    ).set(
        body_background_fill="*neutral_50",
        block_radius="*radius_lg",
        button_large_radius="*radius_lg",
    )


CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
#studio-header { display: flex; align-items: center; gap: 18px; padding: 18px 22px; border-radius: 14px;
  background: linear-gradient(120deg, #312e81 0%, #4f46e5 55%, #db2777 100%); color: #fff; }
#studio-header h1 { margin: 0; font-size: 1.7rem; font-weight: 700; color: #fff; letter-spacing: -0.01em; }
#studio-header p { margin: 2px 0 0 0; opacity: 0.9; color: #eef2ff; font-size: 0.95rem; }
#studio-header .logo { flex: none; }
.model-banner { margin-top: 10px; padding: 12px 16px; border-radius: 12px; border: 1px solid #c7d2fe;
  background: #eef2ff; color: #1e1b4b; font-size: 0.92rem; line-height: 1.45; }
.model-banner b.model-name { font-size: 1rem; }
.model-banner .pill { display: inline-block; padding: 1px 9px; margin-left: 6px; border-radius: 999px;
  background: #e0e7ff; color: #3730a3; font-size: 0.8rem; font-weight: 600; }
.model-banner.warn { background: #fffbeb; border-color: #fcd34d; color: #78350f; }
.model-banner.warn .pill { background: #fde68a; color: #78350f; }
.model-banner.error { background: #fef2f2; border-color: #fca5a5; color: #7f1d1d; }
.model-banner pre { margin: 8px 0 0 0; padding: 8px 10px; border-radius: 8px; background: #1f2937; color: #f9fafb;
  white-space: pre-wrap; word-break: break-all; font-size: 0.82rem; }
.section-title { font-weight: 700; font-size: 1.02rem; margin: 2px 0 -4px 2px; color: #312e81; }
.dark .section-title { color: #c7d2fe; }
.section-title .hint { font-weight: 400; font-size: 0.85rem; color: #64748b; margin-left: 6px; }
#history-gallery .thumbnail-item { background: #161824; }
#examples-gallery .gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(132px, 1fr)); gap: 10px; }
#examples-gallery .gallery-item { padding: 0; border-radius: 12px; overflow: hidden; background: #161824; }
#examples-gallery .gallery-item .container { width: 100%; height: auto; border: none; }
#examples-gallery .gallery-item img { width: 100%; height: auto; max-height: none; aspect-ratio: 1; }
.pixelated img, .pixelated video { image-rendering: pixelated; }
.result-media img, .result-media video { width: 100% !important; height: 100% !important; object-fit: contain; }
#history-gallery .thumbnail-item img { object-fit: contain; }
#result-summary .placeholder { color: #64748b; padding: 70px 20px; text-align: center; border: 2px dashed #cbd5e1;
  border-radius: 14px; background: rgba(255,255,255,0.5); }
#run-status { min-height: 48px; }
#randomize-seed { min-width: 150px !important; }  /* Gradio gives a checkbox no minimum width: it got squeezed */
.dark #result-summary .placeholder { background: transparent; border-color: #475569; color: #94a3b8; }
#generate-btn { font-size: 1.05rem; font-weight: 700; }
#history-gallery .caption-label { font-size: 0.75rem; max-width: 100%; }
footer { opacity: 0.7; }
@media (max-width: 760px) {  /* phones: one column, header text wraps */
  #studio-row, #history-row { flex-direction: column; }
  #studio-row > *, #history-row > * { min-width: 100% !important; }
  #studio-header { padding: 14px; }
  #studio-header h1 { font-size: 1.35rem; }
  #history-gallery .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
  #examples-gallery .gallery { grid-template-columns: repeat(3, minmax(0, 1fr)); }
}
"""


LOGO = (  # the Shapes & Tones world in one mark: a circle, a square, a triangle and a tone
    '<svg class="logo" width="48" height="48" viewBox="0 0 48 48" aria-hidden="true">'
    '<rect width="48" height="48" rx="12" fill="rgba(255,255,255,0.14)"/>'
    '<circle cx="15" cy="15" r="7" fill="#fca5a5"/><rect x="26" y="8" width="14" height="14" rx="2" fill="#fde68a"/>'
    '<polygon points="15,26 23,40 7,40" fill="#86efac"/>'
    '<path d="M26 33 q3.5 -9 7 0 t7 0" stroke="#bfdbfe" stroke-width="3" fill="none" stroke-linecap="round"/></svg>'
)


def header_html() -> str:
    return (
        f'<div id="studio-header">{LOGO}<div>'
        "<h1>CoDi Studio</h1>"
        "<p>Any-to-any generation with Composable Diffusion: give it text, an image, a video and/or a sound, "
        "pick any outputs, and it generates them together.</p></div></div>"
    )


def banner_html(info: ModelInfo) -> str:
    """Which model is loaded and what it is for; amber for random weights, red when no model could be loaded."""
    name = html.escape(info.name)
    device = f'<span class="pill">{html.escape(info.device)} · {html.escape(info.dtype)}</span>'
    if not info.available:  # the pill says where and in what precision it will load
        problem = html.escape(info.problem or "")
        first, _, rest = problem.partition("\n")
        return (
            f'<div class="model-banner error" id="model-banner"><b class="model-name">Model: {name}</b> '
            f'<span class="pill">not loaded</span> {device}<br>{first}<pre>{rest.strip()}</pre></div>'
        )
    if info.random_weights:
        return (
            f'<div class="model-banner warn" id="model-banner"><b class="model-name">Model: {name}</b>{device}'
            '<span class="pill">RANDOM WEIGHTS</span><br>'
            "<b>The trained checkpoint (checkpoints/tiny) was not found, so this model has random weights: "
            "outputs are noise.</b> The app works end to end; train the model with <code>python -m training</code>."
            f"<br><i>{html.escape(info.purpose)}</i></div>"
        )
    return (
        f'<div class="model-banner" id="model-banner"><b class="model-name">Model: {name}</b>{device}<br>'
        f"{html.escape(info.purpose)} <span style='opacity:.7'>Weights: {html.escape(info.source)}"
        f"{'; ' + html.escape(info.why) if info.why else ''}</span></div>"
    )
