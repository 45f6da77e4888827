"""Thumbnail cards for the example gallery and the History tab: media drawn as tiles on one dark card."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from codi.media import MediaError, read_audio, read_image, read_video

CARD_SIZE = (240, 240)  # width, height
BACKGROUND = (22, 24, 36)
INK = (236, 238, 248)
ACCENT = (129, 140, 248)  # indigo-400
PAD = 12
_RAMP = np.array(  # dark -> indigo -> pink -> warm white: a spectrogram colour ramp
    [[38, 41, 62], [67, 56, 202], [219, 39, 119], [251, 191, 36], [255, 251, 235]], dtype=np.float32
)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def image_tile(image: Image.Image, side: int) -> Image.Image:
    """A square crop of an image scaled to `side` (nearest-neighbour, so small renders stay crisp)."""
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.convert("RGB").crop(box).resize((side, side), Image.NEAREST)


def video_tile(frames: np.ndarray, side: int) -> Image.Image:
    """Four frames spread over the clip in a 2x2 grid (reading order), so motion shows in a still."""
    idx = np.linspace(0, len(frames) - 1, 4).round().astype(int)
    half = side // 2
    tile = Image.new("RGB", (side, side), BACKGROUND)
    for k, i in enumerate(idx):
        frame = image_tile(Image.fromarray(frames[i]), half - 1)
        tile.paste(frame, ((k % 2) * (half + 1), (k // 2) * (half + 1)))
    return tile


def audio_tile(wave: np.ndarray, sample_rate: int, side: int, f_lo: float = 80.0, f_hi: float = 4000.0) -> Image.Image:
    """A log-frequency, log-magnitude spectrogram (time right, pitch up): pitch, glide and timbre show."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    n_fft = 2048
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    starts = np.linspace(0, len(wave) - n_fft, 96).astype(int)  # 96 columns whatever the length
    frames = np.stack([wave[s : s + n_fft] for s in starts]) * np.hanning(n_fft)  # [96, n_fft]
    mag = np.abs(np.fft.rfft(frames, axis=1))  # [96, n_fft/2+1]
    freqs = np.geomspace(f_lo, min(f_hi, sample_rate / 2), 96)  # [96] row frequencies, low to high
    bins = np.arange(mag.shape[1]) * sample_rate / n_fft
    rows = np.stack([np.interp(freqs, bins, m) for m in mag])  # [96 time, 96 freq]
    db = 20 * np.log10(rows + 1e-5)
    level = np.clip((db - (db.max() - 50.0)) / 50.0, 0.0, 1.0).T[::-1]  # [freq, time], low pitch at the bottom
    pos = level * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    rgb = _RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac  # [F, T, 3]
    return Image.fromarray(rgb.astype(np.uint8)).resize((side, side), Image.BILINEAR)


def text_tile(text: str, side: int) -> Image.Image:
    """The text, wrapped and as large as fits, on a card."""
    tile = Image.new("RGB", (side, side), (38, 41, 62))
    draw = ImageDraw.Draw(tile)
    quoted = f"“{text.strip()}”"
    for size in range(max(10, side // 5), 7, -1):  # the largest font whose wrapped lines fit in 88 % of the tile
        font = _font(size)
        lines = textwrap.wrap(quoted, width=max(4, int(side * 0.88 / (size * 0.52))))
        widest = max(draw.textlength(line, font=font) for line in lines)
        if widest <= side * 0.88 and len(lines) * size * 1.25 <= side * 0.88:
            break
    y = (side - len(lines) * size * 1.25) / 2
    for line in lines:
        draw.text(((side - draw.textlength(line, font=font)) / 2, y), line, fill=INK, font=font)
        y += size * 1.25
    return tile


def compose(tiles: list[Image.Image], size: tuple[int, int] = CARD_SIZE, footer: int = 30) -> Image.Image:
    """Lays square tiles out on a card of `size` in a centred grid (1: one tile, 2: a row, 3-4: 2 x 2), leaving
    `footer` pixels free at the bottom for the gallery's caption."""
    w, h = size
    card = Image.new("RGB", size, BACKGROUND)
    h -= footer
    if not tiles:
        return card
    n = len(tiles)
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    side = int(min((w - PAD * (cols + 1)) / cols, (h - PAD * (rows + 1)) / rows))
    x0 = (w - cols * side - (cols - 1) * PAD) // 2
    y0 = (h - rows * side - (rows - 1) * PAD) // 2
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        if r == rows - 1 and n % cols:  # centre an incomplete last row
            c += (cols - n % cols) / 2
        resample = Image.NEAREST if side >= t.width else Image.LANCZOS  # crisp pixels up, smooth text down
        card.paste(t.resize((side, side), resample), (int(x0 + c * (side + PAD)), y0 + r * (side + PAD)))
    return card


def tile_for_file(kind: str, path: str | Path, side: int = 160) -> Image.Image | None:
    """A tile for a media file of kind 'image', 'video', 'audio' or 'text'; None when it cannot be read."""
    try:
        if kind == "image":
            return image_tile(read_image(path), side)
        if kind == "video":
            return video_tile(read_video(path, max_seconds=10).frames, side)  # 4 frames are drawn from the start
        if kind == "audio":
            clip = read_audio(path)
            return audio_tile(clip.waveform, clip.sample_rate, side)
        return text_tile(Path(path).read_text().strip(), side)
    except (MediaError, OSError, ValueError):
        return None


def card_for(media: dict[str, str | Path], text: str = "") -> Image.Image:
    """A card showing `text` (if any) then the media files given by kind, in text/image/video/audio order."""
    tiles = [text_tile(text, 160)] if text.strip() else []
    for kind in ("text", "image", "video", "audio"):
        if kind in media and media[kind]:
            tile = tile_for_file(kind, media[kind])
            if tile is not None:
                tiles.append(tile)
    return compose(tiles)


def with_caption(card: Image.Image, caption: str, footer: int = 30) -> Image.Image:
    """A copy of `card` with `caption` written, centred, in its footer (for galleries that show no captions); an
    arrow is written "to", which the bundled font lacks."""
    caption = caption.replace("→", "to")
    card = card.convert("RGB").copy()
    draw = ImageDraw.Draw(card)
    w, h = card.size
    for size in range(20, 8, -1):  # the largest font that fits the width
        font = _font(size)
        if draw.textlength(caption, font=font) <= w - 2 * PAD:
            break
    x = (w - draw.textlength(caption, font=font)) / 2
    draw.text((x, h - footer + (footer - size) / 2 - 2), caption, fill=ACCENT, font=font)
    return card
