"""PNG per ROI: the sagittal slice through the ROI centre with saliency overlaid, and its legend.

The slice is an LPS-aligned sagittal plane sampled through the study's geometry, so it is a
true sagittal view with anterior on the left and superior up whatever the acquisition
orientation. One panel per task; the slice is left clear (only the ROI box and centre are
drawn on it) and everything a reader needs sits around it: orientation letters in the margins,
a scale bar read from the plane's geometry, the class each map explains and the probabilities
below, and one legend strip with the colour bar, the overlay threshold and the grey window.

Drawn with Pillow, not a matplotlib figure: a figure per ROI cost ~0.3 s, more than the
network, Grad-CAM and the NIfTI together. What is the same for every ROI (colour bar, class
names, letters, scale bar, disclaimer) is drawn once and copied. A preview, sized for speed:
1 mm plane pixels shown 2x, both tasks' maps sampled in one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spinelesion.atomic import atomic_path
from spinelesion.data.roi import RoiSpec, sample_grid
from spinelesion.labels import SEQUENCES, TASKS

VIEW_MM = 150.0
PIXEL_MM = 1.0  # 150 x 150 plane pixels (0.75 mm: 200 x 200 cost 40% more to sample, blend and encode)
ZOOM = 2  # screen pixels per plane pixel
SALIENCY_FLOOR = 0.05  # map values below are not drawn: the faint tail of a map would tint all the anatomy
OVERLAY_ALPHA = 0.45  # the map's colour over the grey slice: enough to read both
IMAGE_PX = int(round(VIEW_MM / PIXEL_MM)) * ZOOM  # a slice's side on screen
WINDOW_PERCENTILES = (1.0, 99.5)  # grey window: of the slice's non-zero pixels (robust to a few hot voxels)
METHOD_NAMES = {"occlusion": "occlusion", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++"}

TITLE_H = 22  # the study / ROI line
HEAD_H = 38  # per panel: task and label, then what the map explains
GUTTER = 16  # margin around each slice, holding the orientation letters
SCALE_H = 26  # under each slice: the I letter and the scale bar
LINE_H = 15  # a probability line
COLORBAR_H = 32  # legend: colour bar with its ticks, two lines of meaning beside it
LEGEND_LINE_H = 14
FOOTER_H = 18  # the disclaimer
COLORBAR_W = 180
ROI_CYAN = (0, 255, 255)
DISCLAIMER = "Demonstration model trained on synthetic data - not for clinical use"

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in canvas pixels, right and bottom exclusive."""


@dataclass(frozen=True)
class Layout:
    """Where everything goes on a ROI's PNG; the slices' boxes overlap nothing else."""

    size: tuple[int, int]
    title: Box
    headers: dict[str, Box]  # per task: task, label and what the map explains
    images: dict[str, Box]  # per task: the slice
    letters: dict[str, dict[str, Box]]  # per task: A, P, S, I around the slice
    scale_bars: dict[str, Box]  # per task: the row under the slice holding the scale bar
    captions: dict[str, Box]  # per task: the class probabilities
    colorbar: Box
    legend: Box  # the text beside and under the colour bar (meaning, threshold, window, geometry)


@dataclass(frozen=True)
class RoiPng:
    """What :func:`write_roi_png` drew: the layout and the numbers it states."""

    path: Path
    layout: Layout
    window: tuple[float, float]  # grey level of black and white, in the background sequence's units
    threshold: float  # saliency below is not drawn
    scale_bar_mm: float
    scale_bar_px: int
    lines: tuple[str, ...]  # every text drawn, static and per ROI


def sagittal_plane(
    center_lps: np.ndarray, view_mm: float = VIEW_MM, pixel_mm: float = PIXEL_MM
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape (1, Ny, Nz) of a sagittal plane (axes: P, S) centred on a point."""
    n = int(round(view_mm / pixel_mm))
    affine = np.eye(4)
    affine[:3, :3] = np.diag([1.0, pixel_mm, pixel_mm])
    affine[:3, 3] = (
        np.asarray(center_lps, dtype=np.float64) - np.array([0.0, pixel_mm, pixel_mm]) * (n - 1) / 2
    )
    return affine, (1, n, n)


def background_channel(available: np.ndarray, prefer: tuple[str, ...] = ("t2", "t1", "stir", "t1c")) -> int:
    for name in prefer:
        c = SEQUENCES.index(name)
        if available[c]:
            return c
    return 0


@lru_cache(maxsize=1)
def _inferno() -> np.ndarray:
    """(256, 3) uint8 lookup table of matplotlib's 'inferno' (read once, no figure made)."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the bitmap font, one size
        return ImageFont.load_default()


Rgb = tuple[int, int, int]
BLACK: Rgb = (0, 0, 0)


@lru_cache(maxsize=512)
def _rendered(text: str, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """``text`` rendered as a mask, and the mask's offset from the text origin. Cached: labels,
    headers and probabilities repeat from ROI to ROI, and rendering was a third of the drawing."""
    left, top, right, bottom = _font(size).getbbox(text)
    mask = Image.new("L", (max(1, int(right - left)), max(1, int(bottom - top))), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=_font(size))
    return mask, (int(left), int(top))


def _text(
    canvas: Image.Image, xy: tuple[float, float], text: str, size: int, fill: Rgb, lines: list[str]
) -> None:
    """Draw ``text`` (origin at ``xy``, as ``ImageDraw.text``) and record it."""
    mask, (dx, dy) = _rendered(text, size)
    canvas.paste(fill, (int(round(xy[0])) + dx, int(round(xy[1])) + dy), mask)
    lines.append(text)


def _centred(canvas: Image.Image, box: Box, text: str, size: int, fill: Rgb, lines: list[str]) -> None:
    """Draw ``text`` centred in ``box`` (no text anchors: the bitmap fallback font has none)."""
    x = (box[0] + box[2]) / 2 - _font(size).getlength(text) / 2
    _text(canvas, (x, (box[1] + box[3]) / 2 - size * 0.75), text, size, fill, lines)


@lru_cache(maxsize=2)
def layout(img_w: int = IMAGE_PX, img_h: int = IMAGE_PX) -> Layout:
    """The boxes of a PNG whose slices are ``img_w`` x ``img_h`` screen pixels, one panel per task."""
    panel_w = GUTTER + img_w + GUTTER
    y_head = TITLE_H
    y_img = y_head + HEAD_H + GUTTER
    y_scale = y_img + img_h
    y_cap = y_scale + SCALE_H
    y_legend = y_cap + LINE_H * max(len(c) for c in TASKS.values()) + 8
    height = y_legend + COLORBAR_H + 2 * LEGEND_LINE_H + FOOTER_H
    boxes: dict[str, dict[str, Box]] = {k: {} for k in ("headers", "images", "scale_bars", "captions")}
    letters: dict[str, dict[str, Box]] = {}
    for k, task in enumerate(TASKS):
        x0 = k * panel_w
        xi, xc, yc = x0 + GUTTER, x0 + GUTTER + img_w // 2, y_img + img_h // 2
        boxes["headers"][task] = (x0, y_head, x0 + panel_w, y_head + HEAD_H)
        boxes["images"][task] = (xi, y_img, xi + img_w, y_scale)
        boxes["scale_bars"][task] = (xc + GUTTER, y_scale, xi + img_w, y_cap)
        boxes["captions"][task] = (x0, y_cap, x0 + panel_w, y_legend)
        letters[task] = {
            "A": (x0, yc - GUTTER // 2, xi, yc + GUTTER // 2),
            "P": (xi + img_w, yc - GUTTER // 2, x0 + panel_w, yc + GUTTER // 2),
            "S": (xc - GUTTER // 2, y_img - GUTTER, xc + GUTTER // 2, y_img),
            "I": (xc - GUTTER // 2, y_scale, xc + GUTTER // 2, y_scale + GUTTER),
        }
    width = panel_w * len(TASKS)
    return Layout(
        size=(width, height),
        title=(0, 0, width, TITLE_H),
        letters=letters,
        colorbar=(GUTTER, y_legend + 3, GUTTER + COLORBAR_W, y_legend + 13),
        legend=(0, y_legend, width, height),
        **boxes,
    )


def scale_bar(mm_per_px: float, max_px: float) -> tuple[float, int]:
    """The longest round length (mm) whose bar fits in ``max_px`` screen pixels, and its pixels."""
    for mm in (100.0, 50.0, 20.0, 10.0, 5.0, 2.0, 1.0):
        if mm / mm_per_px <= max_px:
            return mm, int(round(mm / mm_per_px))
    return 1.0, int(round(1.0 / mm_per_px))


def _name_column(x0: int) -> tuple[int, int]:
    """x of a caption's probability values and of its bars, for the panel starting at ``x0``."""
    names = max(_font(12).getlength(c) for classes in TASKS.values() for c in classes)
    x_val = x0 + GUTTER + 10 + int(names) + 8
    return x_val, x_val + 32


@lru_cache(maxsize=4)
def _chrome(
    img_size: tuple[int, int], explains: str, bar_mm: float, bar_px: int
) -> tuple[Image.Image, tuple[str, ...]]:
    """Everything that is the same for every ROI of a run, drawn once (copied for each ROI): colour
    bar and its meaning, class names, orientation letters, scale bars, disclaimer."""
    lay = layout(*img_size)
    canvas = Image.new("RGB", lay.size, "white")
    draw = ImageDraw.Draw(canvas)
    lines: list[str] = []
    for task, classes in TASKS.items():
        for letter, box in lay.letters[task].items():
            _centred(canvas, box, letter, 13, (40, 40, 40), lines)
        x0, y0, x1, y1 = lay.scale_bars[task]
        xr, y = x1 - 2, y1 - 7
        draw.rectangle((xr - bar_px, y, xr, y + 1), fill=BLACK)
        draw.line((xr - bar_px, y - 4, xr - bar_px, y + 5), fill=BLACK)
        draw.line((xr, y - 4, xr, y + 5), fill=BLACK)
        _centred(canvas, (xr - bar_px, y0 + 1, xr, y - 4), f"{bar_mm:g} mm", 11, BLACK, lines)
        cx0, cy0, cx1, _ = lay.captions[task]
        _, x_bar = _name_column(cx0)
        for i, cls in enumerate(classes):
            y = cy0 + LINE_H * i
            _text(canvas, (cx0 + GUTTER + 10, y), cls, 12, (40, 40, 40), lines)
            draw.rectangle((x_bar, y + 5, cx1 - GUTTER, y + 12), fill=(230, 230, 230))
    # colour bar: the map's colours from 0 to 1, its undrawn low end grey
    x0, y0, x1, y1 = lay.colorbar
    ramp = _inferno()[np.linspace(0, 255, x1 - x0).round().astype(int)]
    ramp[np.linspace(0, 1, x1 - x0) < SALIENCY_FLOOR] = 205
    canvas.paste(Image.fromarray(np.ascontiguousarray(np.repeat(ramp[None], y1 - y0, axis=0))), (x0, y0))
    draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=BLACK)
    xt = x0 + SALIENCY_FLOOR * (x1 - x0)
    draw.line((xt, y0 - 3, xt, y1 + 2), fill=BLACK)
    for v, x in ((0, x0), (0.5, (x0 + x1) / 2), (1, x1)):
        label = f"{v:g}"
        _text(canvas, (x - _font(11).getlength(label) / 2, y1 + 2), label, 11, BLACK, lines)
    xl = x1 + 12
    _text(
        canvas,
        (xl, lay.legend[1] + 1),
        f"Overlay: {explains} for each panel's predicted class (0-1, 1 = ROI maximum)",
        11,
        BLACK,
        lines,
    )
    _text(
        canvas,
        (xl, lay.legend[1] + 15),
        f"Below {SALIENCY_FLOOR:g} not drawn (grey on the bar; tick at {SALIENCY_FLOOR:g}); "
        f"{OVERLAY_ALPHA:.0%} over the slice",
        11,
        BLACK,
        lines,
    )
    _text(canvas, (6, lay.size[1] - FOOTER_H + 2), DISCLAIMER, 11, (110, 110, 110), lines)
    return canvas, tuple(lines)


def _panel(gray: np.ndarray, sal: np.ndarray, spec: RoiSpec) -> Image.Image:
    """Grey slice (0-255) with saliency >= the floor blended in, ROI box and centre mark; P right, S up."""
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    mask = sal >= SALIENCY_FLOOR
    lut = _inferno()[np.rint(np.clip(sal, 0, 1) * 255).astype(np.uint8)].astype(np.float32)
    rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * lut[mask]
    # plane axes (P, S) -> image (column, row from the top): transpose, then flip rows
    img = Image.fromarray(np.ascontiguousarray(rgb.transpose(1, 0, 2)[::-1]).astype(np.uint8))
    img = img.resize((img.width * ZOOM, img.height * ZOOM), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    c = img.width / 2
    half = spec.extent_mm[1:] / 2 / PIXEL_MM * ZOOM
    draw.rectangle((c - half[0], c - half[1], c + half[0], c + half[1]), outline=ROI_CYAN, width=1)
    draw.line((c - 8, c, c + 8, c), fill=ROI_CYAN)
    draw.line((c, c - 8, c, c + 8), fill=ROI_CYAN)
    return img


def fit_title(
    title: str, suffix: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float
) -> str:
    """``title`` + ``suffix`` in one line of at most ``width`` pixels: a long title (a DICOM study
    UID is 64 characters) loses its middle to an ellipsis, keeping both ends readable."""
    text = f"{title}{suffix}"
    if font.getlength(text) <= width:
        return text
    keep = len(title)
    while keep > 2:
        keep -= 1
        head, tail = title[: (keep + 1) // 2], title[len(title) - keep // 2 :]
        text = f"{head}...{tail}{suffix}"
        if font.getlength(text) <= width:
            return text
    return text


def write_roi_png(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    available: np.ndarray,
    center_lps: np.ndarray,
    spec: RoiSpec,
    roi_maps: Mapping[str, np.ndarray],
    predictions: Mapping[str, Mapping[str, object]],
    title: str,
    method: str | None = None,
) -> RoiPng:
    """One panel per task (the sagittal slice through the ROI, that task's saliency overlaid) with
    the legend around it. ``method`` names the saliency method in the legend (``saliency`` when
    not given); each task's map is taken to explain its predicted ``label``."""
    plane_affine, plane_shape = sagittal_plane(center_lps)
    ch = background_channel(available)
    image = sample_grid(array[ch : ch + 1], affine, plane_affine, plane_shape)[0, 0, 0].numpy()
    roi_affine = spec.affine(np.asarray(center_lps), context=False)
    signal = image[image > 0]
    lo, hi = (float(v) for v in np.percentile(signal, WINDOW_PERCENTILES)) if signal.size else (0.0, 1.0)
    gray = (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    # every task's map on the plane in one sampling call (the same values as one call per task)
    sal_maps = sample_grid(
        np.stack([np.asarray(roi_maps[t], np.float32) for t in TASKS]), roi_affine, plane_affine, plane_shape
    )[0, :, 0].numpy()
    panels = [(task, _panel(gray, sal_maps[k], spec)) for k, task in enumerate(TASKS)]
    img_size = panels[0][1].size
    lay = layout(*img_size)
    # the scale from the plane's own geometry (its A-P pixel spacing), not from the constants
    mm_per_px = float(np.linalg.norm(plane_affine[:3, 1])) / ZOOM
    first_bar = next(iter(lay.scale_bars.values()))
    bar_mm, bar_px = scale_bar(mm_per_px, min(first_bar[2] - first_bar[0] - 4, lay.size[0] / len(TASKS) / 3))
    explains = f"{METHOD_NAMES.get(method, method)} saliency" if method else "saliency"
    chrome, static = _chrome(img_size, explains, bar_mm, bar_px)
    canvas = chrome.copy()
    draw = ImageDraw.Draw(canvas)
    lines: list[str] = []
    seq = SEQUENCES[ch]
    _text(
        canvas,
        (6, 4),
        fit_title(title, f"  [sagittal, {seq} background]", _font(13), lay.size[0] - 12),
        13,
        BLACK,
        lines,
    )
    for task, panel in panels:
        ix0, iy0, _, _ = lay.images[task]
        canvas.paste(panel, (ix0, iy0))
        pred = predictions[task]
        label = str(pred["label"])
        hx0, hy0, hx1, _ = lay.headers[task]
        _text(canvas, (hx0 + 6, hy0 + 2), f"{task}: {label}", 15, BLACK, lines)
        wordings = (f"map: {explains} for class {label}", f"map: {explains} for {label}")
        fits = [w for w in wordings if _font(11).getlength(w) <= hx1 - hx0 - 12]
        explained = fits[0] if fits else f"map: saliency for {label}"  # the legend names the method
        _text(canvas, (hx0 + 6, hy0 + 22), explained, 11, (60, 60, 60), lines)
        probs = cast(Mapping[str, float], pred["probabilities"])
        cx0, cy0, cx1, _ = lay.captions[task]
        x_val, x_bar = _name_column(cx0)
        full = cx1 - GUTTER - x_bar
        for i, cls in enumerate(TASKS[task]):
            y, p, chosen = cy0 + LINE_H * i, float(probs[cls]), cls == label
            if chosen:  # the decision rule's class, which need not be the most probable one
                draw.polygon(
                    [(cx0 + GUTTER, y + 4), (cx0 + GUTTER + 6, y + 8), (cx0 + GUTTER, y + 12)], fill=BLACK
                )
            _text(canvas, (x_val, y), f"{p:.2f}", 12, BLACK if chosen else (90, 90, 90), lines)
            bar = round(p * full)
            if bar > 0:
                colour = (0, 150, 170) if chosen else (150, 150, 150)
                draw.rectangle((x_bar, y + 5, x_bar + bar, y + 12), fill=colour)
    window = (
        f"Grey window ({seq}): {lo:.4g} black to {hi:.4g} white, percentiles "
        f"{WINDOW_PERCENTILES[0]:g} and {WINDOW_PERCENTILES[1]:g} of the slice's non-zero signal"
        if signal.size
        else f"Grey window ({seq}): no signal in this slice"
    )
    y_text = lay.legend[1] + COLORBAR_H
    _text(canvas, (GUTTER, y_text), window, 11, BLACK, lines)
    voxels = " x ".join(f"{v:.3g}" for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    ey, ez = spec.extent_mm[1:]
    geometry = (
        f"Slice: {mm_per_px * ZOOM:g} mm pixels resampled from {voxels} mm voxels; "
        f"cyan: ROI box ({ey:g} x {ez:g} mm) and its centre"
    )
    _text(canvas, (GUTTER, y_text + LEGEND_LINE_H), geometry, 11, BLACK, lines)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG", compress_level=1)  # speed over a few kB
    return RoiPng(Path(path), lay, (lo, hi), SALIENCY_FLOOR, bar_mm, bar_px, static + tuple(lines))
