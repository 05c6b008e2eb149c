"""Inputs that are NOT a fetal head plane, built from nothing or from a head image.

The plane check and the out-of-distribution score are tested against them
(``benchmarks/plane_check.py``, tests/test_plane.py): no HC may be reported for any of
them. Every builder is deterministic in its seed and returns a (H, W) float32 image in
[0, 1], like ``fetometry.io.read_image``.

Built from nothing (not ultrasound at all): ``noise_gaussian``, ``noise_uniform``,
``constant``, ``gradient``, ``checkerboard``, ``text_page`` (a screen of text),
``shapes`` (filled circles and boxes on black: a round blob that looks like a head to
a segmenter). Built from a head image (``CORRUPTIONS``): drowned in noise, blurred
away, inverted, mostly blacked out, cut to a corner strip.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

DEFAULT_HW = (540, 800)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def noise_gaussian(seed: int, hw: tuple[int, int] = DEFAULT_HW) -> np.ndarray:
    return np.clip(_rng(seed).normal(0.5, 0.2, hw), 0, 1).astype(np.float32)


def noise_uniform(seed: int, hw: tuple[int, int] = DEFAULT_HW) -> np.ndarray:
    return _rng(seed).random(hw, dtype=np.float32)


def constant(seed: int, hw: tuple[int, int] = DEFAULT_HW) -> np.ndarray:
    return np.full(hw, float(_rng(seed).uniform(0.05, 0.95)), np.float32)


def gradient(seed: int, hw: tuple[int, int] = DEFAULT_HW) -> np.ndarray:
    rng = _rng(seed)
    y, x = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = np.cos(angle) * x / hw[1] + np.sin(angle) * y / hw[0]
    return ((ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)).astype(np.float32)


def checkerboard(seed: int, hw: tuple[int, int] = DEFAULT_HW) -> np.ndarray:
    cell = int(_rng(seed).integers(16, 80))
    y, x = np.mgrid[0 : hw[0], 0 : hw[1]]
    return (((y // cell) + (x // cell)) % 2).astype(np.float32)


def text_page(seed: int, hw: tuple[int, int] = DEFAULT_HW) -> np.ndarray:
    rng = _rng(seed)
    page = np.zeros(hw, np.uint8)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .:/-"
    for row in range(24, hw[0], 28):
        line = "".join(rng.choice(list(letters), size=int(rng.integers(20, 60))))
        cv2.putText(page, line, (8, row), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1, cv2.LINE_AA)
    return page.astype(np.float32) / 255.0


def shapes(seed: int, hw: tuple[int, int] = DEFAULT_HW) -> np.ndarray:
    rng = _rng(seed)
    canvas = np.zeros(hw, np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(100, hw[1] - 100)), int(rng.integers(100, hw[0] - 100)))
        if rng.random() < 0.6:
            axes = (int(rng.integers(40, 160)), int(rng.integers(40, 160)))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.integers(120, 256)), -1)
        else:
            half = int(rng.integers(30, 120))
            cv2.rectangle(
                canvas,
                (centre[0] - half, centre[1] - half),
                (centre[0] + half, centre[1] + half),
                int(rng.integers(120, 256)),
                -1,
            )
    return canvas.astype(np.float32) / 255.0


#: Non-ultrasound images, by name.
SYNTHETIC = {
    "noise_gaussian": noise_gaussian,
    "noise_uniform": noise_uniform,
    "constant": constant,
    "gradient": gradient,
    "checkerboard": checkerboard,
    "text_page": text_page,
    "shapes": shapes,
}


def drowned_in_noise(image: np.ndarray, seed: int) -> np.ndarray:
    """Additive Gaussian noise of SD 0.6: the head is no longer visible."""
    return np.clip(image + _rng(seed).normal(0, 0.6, image.shape), 0, 1).astype(np.float32)


def blurred_away(image: np.ndarray, seed: int) -> np.ndarray:
    """Gaussian blur of SD 1/10 of the short side: no edge is left."""
    sigma = min(image.shape) / 10.0
    return cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)


def inverted(image: np.ndarray, seed: int) -> np.ndarray:
    """Negative image: a dark skull on a bright background is not an ultrasound image."""
    return (1.0 - image).astype(np.float32)


def blacked_out(image: np.ndarray, seed: int) -> np.ndarray:
    """All but a random 20% x 20% window set to black."""
    rng = _rng(seed)
    height, width = image.shape
    out = np.zeros_like(image, dtype=np.float32)
    h, w = height // 5, width // 5
    y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
    out[y : y + h, x : x + w] = image[y : y + h, x : x + w]
    return out


def corner_strip(image: np.ndarray, seed: int) -> np.ndarray:
    """The left or right 15% of the frame, stretched back to full width."""
    height, width = image.shape
    strip = image[:, : width * 15 // 100] if _rng(seed).random() < 0.5 else image[:, -width * 15 // 100 :]
    return cv2.resize(strip.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


#: Head images made unmeasurable, by name.
CORRUPTIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "drowned_in_noise": drowned_in_noise,
    "blurred_away": blurred_away,
    "inverted": inverted,
    "blacked_out": blacked_out,
    "corner_strip": corner_strip,
}


def synthetic_set(per_kind: int, *, seed: int = 0, hw: tuple[int, int] = DEFAULT_HW) -> list[tuple[str, np.ndarray]]:
    """``per_kind`` images of every SYNTHETIC kind, as (name, image)."""
    return [(f"{kind}_{i}", build(seed * 1000 + i, hw)) for kind, build in SYNTHETIC.items() for i in range(per_kind)]


# ------------------------------------------------------------- heads in another style


def screen_capture(image: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """A head image re-rendered as another scanner's full-screen capture: the frame
    shrunk inside a larger screen, grey side bars, vendor text, a depth ruler and a
    grey-level bar. It is STILL a head plane: the plane check must pass it.

    Returns (screen, scale): the image was resized by ``scale``, so its pixel size is
    the original's divided by ``scale``."""
    rng = _rng(seed)
    height, width = image.shape
    screen_h, screen_w = int(height * rng.uniform(1.1, 1.4)), int(width * rng.uniform(1.3, 1.8))
    screen = np.zeros((screen_h, screen_w), np.float32)
    bar = float(rng.uniform(0.15, 0.35))
    screen[:, : screen_w // 8] = bar
    screen[:, -screen_w // 8 :] = bar
    scale = float(rng.uniform(0.55, 0.8)) * min(screen_h / height, screen_w / width)
    small = cv2.resize(
        image.astype(np.float32), (int(width * scale), int(height * scale)), interpolation=cv2.INTER_AREA
    )
    top = int(rng.integers(0, screen_h - small.shape[0] + 1))
    left = (screen_w - small.shape[1]) // 2
    screen[top : top + small.shape[0], left : left + small.shape[1]] = small
    text = (screen * 255).astype(np.uint8)
    for row in range(20, screen_h // 3, 22):
        cv2.putText(
            text,
            "GA 24w3d MI 1.1 TIs 0.3 FR 31Hz"[: int(rng.integers(8, 31))],
            (6, row),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            230,
            1,
            cv2.LINE_AA,
        )
    ruler_x = left + small.shape[1] + 6
    for y in range(top, top + small.shape[0], 12):
        cv2.line(text, (ruler_x, y), (ruler_x + (10 if (y - top) % 60 == 0 else 5), y), 220, 1)
    grey_bar = np.linspace(1, 0, screen_h // 3)[:, None]
    text[screen_h // 3 : screen_h // 3 + grey_bar.shape[0], -screen_w // 16 : -screen_w // 16 + 10] = (
        grey_bar * 255
    ).astype(np.uint8)
    return text.astype(np.float32) / 255.0, small.shape[1] / width
