"""Out-of-domain test sets built from HC18 validation heads: other capture styles, other
scanner physics, shadowed lateral walls, a coarser lateral resolution, large heads, other
pixel grids (the frame at half resolution, a capture saved small).

One centre's images are all there is, so the other centres are rendered: each style
maps (image, reference mask, pixel size) to a new image, the reference mask moved with
it, and the new pixel size, so the reference HC in mm (the CSV's) still holds. The
settings differ from the training augmentation's (:mod:`fetometry.data.scanner_styles`):
another font, layout and frame shape for the capture, parameters past the training
ranges for the physics, and the lateral shadow cut from the fitted reference ellipse
by angle rather than from the mask's gradient. They are still this project's idea of
another centre, and are reported as that, beside what the independent check measures on
real images from another centre.

``STYLES``: name -> function(image, mask, pixel_size_mm) -> (image, mask, pixel_size_mm).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from fetometry.data.scanner_styles import (
    beam_blur,
    burn_in,
    compress,
    draw_grey_bar,
    draw_ruler,
    draw_text,
    place_in_frame,
    resample,
    time_gain,
    zoom_on,
)
from fetometry.data.scanner_styles import lateral_wall_loss as walls_lost  # the style below takes its name

Style = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray, float]]

#: Full-screen capture: the frame's width over its height (Voluson screens are about 16:9)
#: and the share of the frame's height the fan takes.
CAPTURE_ASPECT = 1.85
CAPTURE_FAN_SCALE = 0.72
#: The width a small capture is saved at.
SMALL_CAPTURE_WIDTH = 640
#: The large-head style magnifies until the head's reference box fills this share of the
#: frame height (or of its width, whichever comes first).
LARGE_HEAD_FILL = 0.9
#: Lateral shadow: the skull band within this many degrees of horizontal (seen from the
#: head's centre) is darkened by LATERAL_DARKNESS.
LATERAL_HALF_ANGLE_DEG = 40.0
LATERAL_DARKNESS = 0.85
#: Lateral wall loss: within this many degrees of horizontal, a band this share of the
#: head's minor diameter wide taken to black. Both lie past the "scanners-walls" training
#: augmentation's ranges (25-55 degrees, 3-7%, 60-95% dark) and inside the default's,
#: "scanners-walls-wide" (25-70 degrees, 3-12%, 60-100%).
WALL_LOSS_HALF_ANGLE_DEG = 60.0
WALL_LOSS_BAND = 0.08
#: Lateral blur: the extra lateral point-spread (Gaussian sigma, mm) at the top and at the
#: bottom of the image. An ultrasound beam resolves 2-4x finer along its axis than across
#: it, and its width grows past the focus (Szabo, Diagnostic Ultrasound Imaging: Inside
#: Out, 2nd ed., 2014, ch. 7): a probe of lower frequency or a scanner of another class
#: smears structures that run along the beam, the skull's lateral walls among them, and
#: stretches the speckle sideways.
LATERAL_BLUR_SIGMA_MM = (0.5, 1.2)


def capture(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """A vendor screen: a grey side panel of text, a header, the fan at 0.72 scale, a
    depth ruler with 10 mm ticks and a grey-scale bar."""
    height, width = image.shape
    frame_h = round(height / CAPTURE_FAN_SCALE * 0.95)
    frame_w = round(frame_h * CAPTURE_ASPECT)
    scale = CAPTURE_FAN_SCALE * frame_h / height
    left = round(0.22 * frame_w)
    top = round(0.08 * frame_h)
    frame, moved = place_in_frame(image, mask, (frame_h, frame_w), scale, (left, top))
    frame[:, : round(0.18 * frame_w)] = 0.16
    layer = np.zeros(frame.shape, np.uint8)
    text_px = 0.028 * frame_h
    font = cv2.FONT_HERSHEY_COMPLEX  # not one of the training augmentation's fonts
    for row, line in enumerate(("VOLUSON-STYLE", "OB/GYN", "C1-5-D", "FR 31Hz", "GN -4", "DR 66", "PRF 1.2kHz")):
        draw_text(layer, line, (round(0.01 * frame_w), round((row + 2) * text_px * 1.9)), text_px, font)
    draw_text(layer, "HOSPITAL 04.12.2026 10:41:07  MI 0.9 TIs 0.2", (left, round(0.05 * frame_h)), text_px, font)
    new_pixel = pixel_size_mm / scale
    fan_right = round(left + scale * width)
    draw_ruler(layer, fan_right + 6, top, round(top + scale * height), 10.0 / new_pixel)
    burn_in(frame, layer, 0.92)
    draw_grey_bar(frame, round(0.95 * frame_w), round(0.2 * frame_h), round(0.6 * frame_h), max(3, frame_w // 90))
    return frame, moved, new_pixel


def resampled(factor: float) -> Style:
    """The style of the whole frame resampled by ``factor`` (area-averaged down, linear up):
    the same anatomy exported on another scanner's pixel grid. The pixel size grows by
    1 / factor, so the CSV's HC still holds. ``benchmarks/resolution.py`` sweeps it."""

    def style(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
        height, width = image.shape
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        out = cv2.resize(image, size, interpolation=interpolation)
        moved = cv2.resize(mask, size, interpolation=interpolation)
        return out, moved, pixel_size_mm * width / size[0]

    return style


def small_capture(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """The vendor screen of ``capture`` saved at SMALL_CAPTURE_WIDTH pixels wide, as some
    scanners and frame grabbers export it (640x346 here; the other centre's images run
    from 640x392 to 1495x787)."""
    frame, moved, pixel = capture(image, mask, pixel_size_mm)
    return resampled(SMALL_CAPTURE_WIDTH / frame.shape[1])(frame, moved, pixel)


def scanner_physics(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """Another scanner's processing: a steep TGC, a narrow dynamic range (past the
    training range), a coarser grid (0.4, past it too) and a lower overall gain."""
    out = time_gain(image, np.float32([1.35, 1.0, 0.7, 0.55, 0.75]))
    out = compress(out, 0.95)
    out = resample(out, 0.4) * np.float32(0.85)
    out[image <= 0] = 0
    return np.clip(out, 0, 1).astype(np.float32), mask, pixel_size_mm


def lateral_shadow(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """The skull's left and right walls gone: the band +-4% of the head's semi-minor axis
    around the reference ellipse, within 40 degrees of horizontal seen from the head's
    centre, filled from its surroundings (OpenCV's Telea inpainting) and blended in with
    weight 0.85."""
    ellipse = _reference_ellipse(mask)
    if ellipse is None:
        return image, mask, pixel_size_mm
    (cx, cy), (d1, d2), _ = ellipse
    height, width = image.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    outline = cv2.ellipse(np.zeros((height, width), np.uint8), ellipse, 255, max(2, round(0.04 * min(d1, d2))))
    angle = np.degrees(np.arctan2(np.abs(y - cy), np.abs(x - cx)))
    band = ((outline > 0) & (angle <= LATERAL_HALF_ANGLE_DEG)).astype(np.uint8)
    filled = cv2.inpaint(np.round(image * 255).astype(np.uint8), band, 5, cv2.INPAINT_TELEA).astype(np.float32) / 255
    weight = LATERAL_DARKNESS * cv2.GaussianBlur(band.astype(np.float32), (0, 0), 1.5)
    return (image * (1 - weight) + filled * weight).astype(np.float32), mask, pixel_size_mm


def wall_loss(half_angle_deg: float, band: float) -> Style:
    """The style of the skull's side walls gone to black: within ``half_angle_deg`` of
    horizontal, a band ``band`` of the head's minor diameter wide on the outline
    (``scanner_styles.lateral_wall_loss`` at full darkness); the mask and pixel size kept.
    ``benchmarks/wall_loss_sweep.py`` sweeps it."""

    def style(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
        return walls_lost(image, mask, half_angle_deg, band, 1.0), mask, pixel_size_mm

    return style


def lateral_wall_loss(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """The skull's side walls gone to black: ``wall_loss`` within 60 degrees of horizontal,
    a band 8% of the head's minor diameter wide, where the wall returns no echo or lies in
    a thick skull's shadow. ``lateral-shadow`` fills the same walls from their surroundings
    instead, which the networks see through."""
    return wall_loss(WALL_LOSS_HALF_ANGLE_DEG, WALL_LOSS_BAND)(image, mask, pixel_size_mm)


def lateral_blur(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """A coarser lateral resolution: every row blurred horizontally (across the beam, which
    runs down the image) by a Gaussian whose sigma grows linearly with depth from 0.5 to
    1.2 mm; the reference mask is unchanged (the anatomy did not move)."""
    top, bottom = (sigma / pixel_size_mm for sigma in LATERAL_BLUR_SIGMA_MM)
    return beam_blur(image, top, bottom), mask, pixel_size_mm


def large_head(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """Magnified about the head until its box fills 90% of the frame (a late-pregnancy head
    at a shallow depth); the head stays inside the frame. Heads that already fill it are
    left as they are."""
    return centred_zoom(image, mask, pixel_size_mm, LARGE_HEAD_FILL, min_zoom=1.05)


def frame_filling(fill: float) -> Style:
    """The style of a head magnified and centred until its box is ``fill`` of the frame
    (of its height or its width, whichever comes first). Above 1 the skull runs off the
    frame on two opposite sides: a centred head larger than the image, as a late-pregnancy
    head at a shallow depth or a high zoom shows it. ``benchmarks/frame_filling.py`` sweeps it."""

    def style(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
        return centred_zoom(image, mask, pixel_size_mm, fill)

    return style


def head_box(mask: np.ndarray) -> tuple[float, float, int, int] | None:
    """(centre x, centre y, height, width) in pixels of the box around the mask's head
    pixels, None without any: what ``centred_zoom`` centres and scales."""
    ys, xs = np.nonzero(mask > 0.5)
    if ys.size == 0:
        return None
    return (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1


def centred_zoom(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float, fill: float, *, min_zoom: float = 0.0):
    """Magnified (or shrunk) so that the head's reference box is ``fill`` of the frame, its
    centre moved to the frame's centre; left as it is when the zoom would be at most
    ``min_zoom``. The pixel size shrinks with the zoom, so the CSV's HC still holds."""
    box = head_box(mask)
    if box is None:
        return image, mask, pixel_size_mm
    box_cx, box_cy, box_h, box_w = box
    height, width = image.shape
    zoom = min(fill * height / box_h, fill * width / box_w)
    if zoom <= min_zoom:
        return image, mask, pixel_size_mm
    if abs(zoom - 1.0) < 1e-6:
        zoom = 1.0 + 1e-6  # the fixed point below needs zoom != 1; a millionth moves no pixel visibly
    # The fixed point that maps the head's box centre to the frame centre under the zoom.
    fixed = ((width / 2 - zoom * box_cx) / (1 - zoom), (height / 2 - zoom * box_cy) / (1 - zoom))
    out, moved = zoom_on(image, mask, (float(fixed[0]), float(fixed[1])), zoom)
    return out, moved, pixel_size_mm / zoom


def combined(image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """Lateral shadow, then another scanner's physics, then the capture."""
    for style in (lateral_shadow, scanner_physics, capture):
        image, mask, pixel_size_mm = style(image, mask, pixel_size_mm)
    return image, mask, pixel_size_mm


def _reference_ellipse(mask: np.ndarray):
    contours, _ = cv2.findContours((mask > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    return cv2.fitEllipse(largest) if len(largest) >= 5 else None


STYLES: dict[str, Style] = {
    "hc18": lambda image, mask, pixel_size_mm: (image, mask, pixel_size_mm),
    "capture": capture,
    "scanner-physics": scanner_physics,
    "lateral-shadow": lateral_shadow,
    "lateral-blur": lateral_blur,
    "lateral-wall-loss": lateral_wall_loss,
    "large-head": large_head,
    "combined": combined,
    "half-resolution": resampled(0.5),
    "small-capture": small_capture,
}


def render(style: str | Style, image: np.ndarray, mask: np.ndarray, pixel_size_mm: float):
    """One HC18 head in ``style`` (a name in STYLES, or a style function): (image, mask
    (bool), pixel size in mm)."""
    if isinstance(style, str) and style not in STYLES:
        raise KeyError(f"unknown style {style!r}: use one of {', '.join(STYLES)}")
    function = STYLES[style] if isinstance(style, str) else style
    out, moved, pixel = function(image.astype(np.float32), mask.astype(np.float32), float(pixel_size_mm))
    if not math.isfinite(pixel) or pixel <= 0:
        raise ValueError(f"{style}: the pixel size became {pixel}")
    return np.clip(out, 0, 1).astype(np.float32), moved > 0.5, pixel


def measured_in_style(
    predictor,
    samples: list,
    style: str | Style,
    *,
    plane_checker=None,
    batch: int = 4,
    progress: bool = False,
    desc: str | None = None,
) -> Iterator[tuple]:
    """Each sample rendered in ``style`` and measured as `fetometry measure` does (the
    plane check when one is given, the model's quality gate), in order: yields (sample,
    image, reference mask, pixel size mm, ImageResult). ``desc`` labels the progress bar
    (default: the style's name)."""
    from tqdm import tqdm

    from fetometry.pipeline import measure_batch

    desc = desc or (style if isinstance(style, str) else getattr(style, "__name__", "style"))
    for start in tqdm(range(0, len(samples), batch), desc=desc, disable=not progress):
        chunk = samples[start : start + batch]
        rendered = [render(style, s.load_image(), s.load_mask(), s.pixel_size_mm) for s in chunk]
        results = measure_batch(
            predictor,
            [image for image, _, _ in rendered],
            filenames=[s.name for s in chunk],
            pixel_sizes_mm=[pixel for _, _, pixel in rendered],
            plane_checker=plane_checker,
        )
        for sample, (image, mask, pixel), result in zip(chunk, rendered, results):
            yield sample, image, mask, pixel, result
