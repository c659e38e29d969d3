"""Deterministic stand-in pictures: a flat-style landscape whose colours come from the prompt and
whose layout comes from the seed, with the prompt written small in a corner.

Drawn in palette mode (one byte a pixel) so a one-megapixel PNG costs a few milliseconds: the
emulator must never be the bottleneck of a load test.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

__all__ = ["SIZES", "encode", "prompt_colour", "render"]

# Stable Image Core output sizes by aspect ratio (width, height).
SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "5:4": (1088, 896),
    "4:5": (896, 1088),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}

# Words that set the picture's hue (0-1) and mood, so a prompt is recognisable in its image.
_WORD_HUES: dict[str, float] = {
    "warm": 0.07,
    "sunset": 0.05,
    "coffee": 0.08,
    "fire": 0.03,
    "autumn": 0.07,
    "cozy": 0.08,
    "desert": 0.11,
    "gold": 0.13,
    "golden": 0.13,
    "sun": 0.12,
    "sand": 0.12,
    "plant": 0.30,
    "plants": 0.30,
    "forest": 0.33,
    "natural": 0.28,
    "green": 0.33,
    "garden": 0.30,
    "spring": 0.25,
    "jungle": 0.35,
    "meadow": 0.27,
    "ocean": 0.55,
    "sea": 0.55,
    "water": 0.53,
    "sky": 0.58,
    "blue": 0.60,
    "river": 0.52,
    "lake": 0.55,
    "ice": 0.52,
    "winter": 0.57,
    "snow": 0.58,
    "minimalist": 0.58,
    "modern": 0.60,
    "city": 0.65,
    "night": 0.68,
    "space": 0.72,
    "galaxy": 0.75,
    "purple": 0.78,
    "dream": 0.80,
    "pink": 0.92,
    "rose": 0.95,
    "love": 0.97,
    "red": 0.99,
}
_DARK_WORDS = frozenset({"night", "dark", "space", "galaxy", "moon", "midnight", "storm"})

_SKY_SHADES = 128
_LAND_LAYERS = 3
_LAND_SHADES = 8
_ACCENTS = 8
# Palette layout: sky gradient, land layers, accents, then caption colours.
_LAND_BASE = _SKY_SHADES
_ACCENT_BASE = _LAND_BASE + _LAND_LAYERS * _LAND_SHADES
_CAPTION_BG = _ACCENT_BASE + _ACCENTS
_CAPTION_FG = _CAPTION_BG + 1
_CAPTION_MAX_CHARS = 72


@dataclass(frozen=True)
class _Scheme:
    hue: float
    dark: bool


def _scheme(prompt: str, negative_prompt: str) -> _Scheme:
    words = re.findall(r"[a-z]+", prompt.lower())
    hues = [_WORD_HUES[w] for w in words if w in _WORD_HUES]
    if hues:
        # Average on the colour circle, so red (0.99) and orange (0.05) meet near 0.02.
        x = sum(math.cos(2 * math.pi * h) for h in hues)
        y = sum(math.sin(2 * math.pi * h) for h in hues)
        hue = (math.atan2(y, x) / (2 * math.pi)) % 1.0
    else:
        digest = hashlib.sha256(f"{prompt}\0{negative_prompt}".encode()).digest()
        hue = digest[0] / 255
    return _Scheme(hue=hue, dark=any(w in _DARK_WORDS for w in words))


def _rgb(hue: float, lightness: float, saturation: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hls_to_rgb(hue % 1.0, min(max(lightness, 0), 1), min(max(saturation, 0), 1))
    return round(r * 255), round(g * 255), round(b * 255)


def _palette(scheme: _Scheme, rng: random.Random) -> list[int]:
    hue = scheme.hue
    top_l, bottom_l = (0.10, 0.32) if scheme.dark else (0.55, 0.86)
    colours: list[tuple[int, int, int]] = []
    for i in range(_SKY_SHADES):
        t = i / (_SKY_SHADES - 1)
        colours.append(_rgb(hue + 0.06 * t, top_l + (bottom_l - top_l) * t, 0.55))
    for layer in range(_LAND_LAYERS):
        base_l = (0.42 - 0.12 * layer) if not scheme.dark else (0.22 - 0.05 * layer)
        for shade in range(_LAND_SHADES):
            colours.append(_rgb(hue - 0.08 * (layer + 1), base_l - 0.015 * shade, 0.45))
    for _ in range(_ACCENTS):
        colours.append(_rgb(hue + rng.choice((0.5, 0.45, 0.55, 0.1)), rng.uniform(0.55, 0.8), 0.75))
    colours.append((18, 18, 24))  # caption background
    colours.append((245, 245, 240))  # caption text
    colours += [(0, 0, 0)] * (256 - len(colours))
    return [channel for colour in colours for channel in colour]


@lru_cache(maxsize=16)
def _sky(width: int, height: int) -> bytes:
    rows = [bytes([y * (_SKY_SHADES - 1) // max(height - 1, 1)]) * width for y in range(height)]
    return b"".join(rows)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _ridge(rng: random.Random, width: int, height: int, level: float) -> list[tuple[float, float]]:
    waves = [
        (rng.uniform(0.5, 3.5), rng.uniform(0, 2 * math.pi), rng.uniform(0.02, 0.06))
        for _ in range(3)
    ]
    step = max(width // 48, 8)
    points = []
    for x in range(0, width + step, step):
        offset = sum(a * math.sin(f * 2 * math.pi * x / width + p) for f, p, a in waves)
        points.append((float(x), height * (level + offset)))
    return [*points, (float(width), float(height)), (0.0, float(height))]


def render(
    prompt: str, negative_prompt: str, seed: int, aspect_ratio: str, output_format: str
) -> bytes:
    """The encoded picture (png, jpeg or webp) for these inputs; the same inputs, the same bytes."""
    width, height = SIZES[aspect_ratio]
    key = f"{prompt}\0{negative_prompt}\0{seed}\0{aspect_ratio}".encode()
    rng = random.Random(hashlib.sha256(key).digest())
    image = Image.frombytes("P", (width, height), _sky(width, height))
    image.putpalette(_palette(_scheme(prompt, negative_prompt), rng))
    draw = ImageDraw.Draw(image)
    short = min(width, height)

    # A sun (or moon), then small accents scattered in the sky.
    sun_r = short * rng.uniform(0.07, 0.13)
    sun_x, sun_y = rng.uniform(0.15, 0.85) * width, rng.uniform(0.12, 0.4) * height
    draw.ellipse((sun_x - sun_r, sun_y - sun_r, sun_x + sun_r, sun_y + sun_r), fill=_ACCENT_BASE)
    for _ in range(rng.randint(4, 9)):
        r = short * rng.uniform(0.008, 0.025)
        x, y = rng.uniform(0, width), rng.uniform(0.03, 0.5) * height
        fill = _ACCENT_BASE + rng.randint(1, _ACCENTS - 1)
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        else:
            draw.regular_polygon(
                (x, y, r * 1.4),
                n_sides=rng.choice((3, 4, 5, 6)),
                rotation=rng.uniform(0, 90),
                fill=fill,
            )

    # Three ridges of land, nearer ones darker.
    for layer in range(_LAND_LAYERS):
        level = 0.55 + 0.12 * layer + rng.uniform(-0.04, 0.04)
        fill = _LAND_BASE + layer * _LAND_SHADES + rng.randint(0, _LAND_SHADES - 1)
        draw.polygon(_ridge(rng, width, height, level), fill=fill)

    # The prompt, small, in the bottom-left corner.
    font_px = max(14, short // 48)
    caption = (
        prompt if len(prompt) <= _CAPTION_MAX_CHARS else prompt[: _CAPTION_MAX_CHARS - 1] + "…"
    )
    caption = f"{caption}  ·  seed {seed}"
    font = _font(font_px)
    margin = font_px
    left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
    box_w = min(right - left + 2 * margin // 2, width - 2 * margin)
    box = (margin, height - margin - (bottom - top) - margin, margin + box_w, height - margin)
    draw.rounded_rectangle(box, radius=font_px // 2, fill=_CAPTION_BG)
    draw.text(
        (box[0] + margin // 2, box[1] + margin // 2 - top), caption, font=font, fill=_CAPTION_FG
    )
    return encode(image, output_format)


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """The colour a prompt stands for in these pictures (its words' hue)."""
    return _rgb(_scheme(prompt, "").hue, 0.5, 0.7)


def encode(image: Image.Image, output_format: str) -> bytes:
    """The image as png, jpeg or webp (png and webp keep an alpha channel)."""
    out = io.BytesIO()
    keep_alpha = image.mode == "RGBA"
    if output_format == "png":
        image.save(out, format="PNG", compress_level=1)
    elif output_format == "jpeg":
        image.convert("RGB").save(out, format="JPEG", quality=88)
    elif output_format == "webp":
        image.convert("RGBA" if keep_alpha else "RGB").save(
            out, format="WEBP", quality=82, method=0
        )
    else:
        msg = f"unknown output format {output_format!r}"
        raise ValueError(msg)
    return out.getvalue()
