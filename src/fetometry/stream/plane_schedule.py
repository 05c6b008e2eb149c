"""Which frames of a stream the plane classifier sees: every k-th, and at once after a change of view.

The plane check costs more than a tracked segmentation pass (``docs/BENCHMARKS.md``,
"Every scale"), so a stream may run it on every ``every``-th frame and let the frames
between carry its verdict. A carried verdict is only as good as the picture it was made
on: when the sonographer leaves the head for the abdomen, the frames up to the next
check would keep the head's verdict, and the segmenter can fit an ellipse to an abdomen.
So a frame is also checked when its picture has moved away from the last checked frame's
by more than ``max_view_change``.

The view change (defined here) compares what SonoNet compares: each frame is shrunk to
1/8 of the classifier's 224x288 input (28x36 cells of about 19x22 pixels of an 800x540
frame, which averages speckle away) and standardised as the classifier standardises its
input (minus the mean, over the SD), so a change of gain moves it little. The view change
of two frames is the mean absolute difference of their thumbnails, in SDs of the picture.

The limit is measured, not guessed (``benchmarks/plane_view_change.py``): it is half the
smallest view change from a head plane to a frame the check no longer calls one, over fades
from HC18 heads to SonoNet's non-head example planes, heads sliding out of the frame and
heads zoomed in. A frame that carries a verdict is therefore never more than ``every - 1``
frames from a checked one and never further from its picture than half of any change that
ended a head plane's verdict in those tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

#: (height, width) of the thumbnail: 1/8 of SonoNet's 224x288 input.
THUMBNAIL_HW = (28, 36)
#: The limit that ``benchmarks/plane_view_change.py`` measured (module docstring).
DEFAULT_MAX_VIEW_CHANGE = 0.1
#: The stream's default: a plane check on every 8th frame, and on any frame whose view changed.
DEFAULT_PLANE_EVERY = 8


def thumbnail(image: np.ndarray) -> np.ndarray:
    """(H, W) image -> (28, 36) float32, standardised (zero mean, unit SD; all zeros if flat)."""
    height, width = THUMBNAIL_HW
    pixels = np.asarray(image, dtype=np.float32)
    # A quarter first: INTER_AREA by a whole factor takes a fast path, several times faster
    # than one step (benchmarks/plane_view_change.py, view_change_cost); the two steps
    # average nearly the same pixels.
    quarter = cv2.resize(
        pixels, (max(width, pixels.shape[1] // 4), max(height, pixels.shape[0] // 4)), interpolation=cv2.INTER_AREA
    )
    small = cv2.resize(quarter, (width, height), interpolation=cv2.INTER_AREA)
    spread = float(small.std())
    centred = small - np.float32(small.mean())
    return centred / np.float32(spread) if spread > 1e-6 else np.zeros_like(centred)


def view_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (``thumbnail``), in SDs of the picture."""
    return float(np.mean(np.abs(a - b)))


@dataclass
class PlaneSchedule:
    """Decides, frame by frame and in order, which frames the plane classifier sees.

    ``every``: the longest run of frames between two checks (1 = every frame).
    ``max_view_change``: check a frame at once when its view change from the last
    checked frame exceeds this (None: only every k-th frame)."""

    every: int = DEFAULT_PLANE_EVERY
    max_view_change: float | None = DEFAULT_MAX_VIEW_CHANGE
    #: Frames checked, and of those the ones checked because their view changed, before their turn.
    checked: int = 0
    checked_for_change: int = 0
    _last_checked: np.ndarray | None = field(default=None, repr=False)
    _waited: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"plane_every={self.every}: check the plane on at least every k-th frame, k >= 1")
        if self.max_view_change is not None and not self.max_view_change > 0:
            raise ValueError(f"max_view_change={self.max_view_change}: give a positive limit, or None for none")

    def due(self, image: np.ndarray) -> bool:
        """Whether this frame, the next of the stream, is checked; call once per frame, in order."""
        if self.every == 1:
            self.checked += 1
            return True
        current = thumbnail(image) if self.max_view_change is not None else None
        if self._waited is None or self._waited + 1 >= self.every:
            return self._check(current)
        if current is not None and view_change(current, self._last_checked) > self.max_view_change:
            self.checked_for_change += 1
            return self._check(current)
        self._waited += 1
        return False

    def _check(self, current: np.ndarray | None) -> bool:
        self._last_checked, self._waited = current, 0
        self.checked += 1
        return True
