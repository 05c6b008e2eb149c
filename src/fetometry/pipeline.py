"""The Python API behind the CLI: image files in, measurements (and masks) out.

    image -> io (pixels, pixel size) -> inference (probability map, original grid;
             plane label and out-of-distribution distance)
          -> biometry (ellipse, quality gate, HC/BPD/OFD in mm)

``measure_batch`` (and ``measure`` for one image) is the ONE measurement path: every
surface (predict, measure, serve, stream, explain) calls it or, holding predictions
already, ``result_from_prediction``. Both always apply the model's own calibrated HC
offset and quality thresholds and, when a plane checker is given, the plane check.
Every image gets a result with a ``status``; failures of one image never stop a batch,
and no millimetre value exists without a pixel size.
"""

from __future__ import annotations

import csv
import functools
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fetometry.biometry.ellipse import Ellipse, EllipseFitError, HeadComponent, NoHeadError, head_from_probability
from fetometry.biometry.measures import HeadMeasurement, measure_ellipse, ramanujan_perimeter
from fetometry.biometry.quality import QualityReport, assess_quality
from fetometry.data.loaders import detect_layout, load
from fetometry.formatting import csv_cell
from fetometry.inference.plane import NOT_A_HEAD_PLANE, OUT_OF_DISTRIBUTION, PlaneChecker, PlaneResult
from fetometry.inference.predictor import Prediction, Predictor
from fetometry.io.archive_input import INPUT_SUFFIXES, InputPixels, read_input
from fetometry.io.images import ImageReadError, write_mask
from fetometry.io.pixel_size import read_pixel_size_csv, validate_pixel_size
from fetometry.threads import beside_pool, fit_pool, prefetch

log = logging.getLogger(__name__)

#: The plane check's columns (measurements.csv, frames.csv, ``measure --json``).
PLANE_COLUMNS = ("plane_label", "plane_probability", "head_plane", "head_plane_probability", "ood_distance")
#: The columns a measured head fills from its HeadMeasurement (mm, the angle, the cephalic index).
MM_KEYS = [
    "center_x_mm",
    "center_y_mm",
    "semi_axes_a_mm",
    "semi_axes_b_mm",
    "angle_rad",
    "hc_mm",
    "bpd_mm",
    "ofd_mm",
    "cephalic_index",
]
#: measurements.csv columns; the first six are the HC18 submission format.
CSV_COLUMNS = [
    "filename",
    *MM_KEYS,
    "pixel_size_mm",
    "model",
    "status",
    "detail",
    "confidence",
    "center_x_px",
    "center_y_px",
    "semi_axes_a_px",
    "semi_axes_b_px",
    "quality_score",
    "quality_rule",
    *PLANE_COLUMNS,
]

# Status codes (the `status` column); `detail` carries the human-readable reason.
OK = "ok"
NO_PIXEL_SIZE = "no_pixel_size"
NO_HEAD = "no_head"
FIT_FAILED = "fit_failed"
UNREADABLE = "unreadable"
REFUSED = "refused"  # the quality gate refused the frame; `detail` names the rule
# NOT_A_HEAD_PLANE / OUT_OF_DISTRIBUTION (fetometry.inference.plane): the plane check
# refused the image; `detail` names the plane or the distance.
PLANE_STATUSES = (NOT_A_HEAD_PLANE, OUT_OF_DISTRIBUTION)


@dataclass
class ImageInput:
    path: Path
    pixel_size_mm: float | None = None
    pixel_size_problem: str = ""

    @classmethod
    def from_sample(cls, sample) -> "ImageInput":
        """A data-set Sample (fetometry.data.Sample) as a measurement input."""
        return cls(sample.image_path, sample.pixel_size_mm)


@dataclass
class ImageResult:
    filename: str
    status: str
    detail: str = ""
    pixel_size_mm: float | None = None
    ellipse: Ellipse | None = None
    measurement: HeadMeasurement | None = None
    prediction: Prediction | None = field(default=None, repr=False)
    model: str = ""
    quality: QualityReport | None = field(default=None, repr=False)
    plane: PlaneResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """One measurements.csv row / the `measure --json` object (None = empty)."""
        row = {key: None for key in CSV_COLUMNS}
        row.update(
            filename=self.filename,
            status=self.status,
            detail=self.detail,
            model=self.model,
            pixel_size_mm=self.pixel_size_mm,
        )
        if self.prediction is not None:
            row["confidence"] = round(self.prediction.confidence, 4)
        if self.quality is not None:
            row.update(quality_score=round(self.quality.score, 4), quality_rule=self.quality.rule)
        if self.ellipse is not None:
            row.update(
                center_x_px=self.ellipse.center_x_px,
                center_y_px=self.ellipse.center_y_px,
                semi_axes_a_px=self.ellipse.semi_major_px,
                semi_axes_b_px=self.ellipse.semi_minor_px,
            )
        if self.measurement is not None:
            values = self.measurement.to_dict()
            row.update({key: values[key] for key in MM_KEYS})
        if self.plane is not None:
            row.update(
                plane_label=self.plane.label,
                plane_probability=round(self.plane.probability, 4),
                head_plane=self.plane.head_plane,
                head_plane_probability=round(self.plane.head_probability, 4),
                ood_distance=round(self.plane.ood_distance, 3),
            )
        return row


@dataclass(frozen=True)
class HeadFit:
    """The ellipse fitted to a probability map and the head component it was fitted to,
    or the status and reason why there is none."""

    ellipse: Ellipse | None
    status: str = OK
    detail: str = ""
    component: HeadComponent | None = None


def fit_head(prediction: Prediction) -> HeadFit:
    """Probability map -> the head's ellipse (``biometry.ellipse``), or no head / no fit."""
    try:
        ellipse, component = head_from_probability(prediction.probability)
        return HeadFit(ellipse, component=component)
    except NoHeadError as error:
        return HeadFit(None, NO_HEAD, f"no head found: {error}")
    except EllipseFitError as error:
        return HeadFit(None, FIT_FAILED, f"no ellipse could be fitted: {error}")


def result_from_prediction(
    predictor: Predictor,
    filename: str,
    prediction: Prediction,
    pixel_size_mm: float | None,
    *,
    pixel_size_problem: str = "",
    plane: PlaneResult | None = None,
    gate: bool = True,
    head: HeadFit | None = None,
    image: np.ndarray | None = None,
) -> ImageResult:
    """Probability map -> ellipse -> plane check -> quality gate -> measurement, with
    the model's own HC offset and quality thresholds and a status saying what happened.

    ``plane``: the plane checker's scores for this image (None: no plane check, e.g.
    ``--plane-check off``). A frame the plane check or the gate refuses keeps its
    ellipse (for the overlay) but gets no measurement: ``detail`` names the reason.
    ``gate=False`` switches the quality gate off (research scoring: measure everything).
    ``head``: ``fit_head(prediction)`` when the caller fitted it already (``measure_batch``
    fits while the plane check still runs). ``image``: the measured image, for the gate's
    ``outside_scan`` rule (a head cut by the scan sector's edge); every caller that has
    it passes it.
    """
    head = head or fit_head(prediction)
    result = ImageResult(
        filename,
        head.status,
        head.detail,
        pixel_size_mm=pixel_size_mm,
        ellipse=head.ellipse,
        prediction=prediction,
        model=predictor.name,
        plane=plane,
    )
    if plane is not None:
        result.plane = plane.decide(_head_size_mm(result.ellipse, pixel_size_mm))
        if not result.plane.head_plane:
            result.status, result.detail = result.plane.status, result.plane.detail
            return result
    if result.ellipse is None:
        return result
    if gate:
        result.quality = assess_quality(
            prediction,
            result.ellipse,
            pixel_size_mm=pixel_size_mm,
            image_shape=prediction.probability.shape,
            thresholds=predictor.config.thresholds,
            image=image,
            # The fit's component is the mask's largest one when both used one threshold.
            head=head.component if head.component and head.component.threshold == prediction.threshold else None,
        )
        if not result.quality.passed:
            result.status, result.detail = REFUSED, result.quality.detail
            return result
    if pixel_size_mm is None:
        result.status = NO_PIXEL_SIZE
        result.detail = (
            pixel_size_problem or "no pixel size: give --pixel-size MM or --pixel-csv CSV; no mm value without it"
        )
        return result
    offset_px = predictor.boundary_offset_px(prediction)
    result.measurement = measure_ellipse(result.ellipse, pixel_size_mm, offset_px=offset_px)
    return result


def _head_size_mm(ellipse: Ellipse | None, pixel_size_mm: float | None) -> float | None:
    """The candidate head's ellipse perimeter in mm (before the boundary offset), or None."""
    if ellipse is None or pixel_size_mm is None:
        return None
    return ramanujan_perimeter(ellipse.semi_major_px, ellipse.semi_minor_px) * float(pixel_size_mm)


def measure_batch(
    predictor: Predictor,
    images: Sequence[np.ndarray],
    *,
    filenames: Sequence[str],
    pixel_sizes_mm: Sequence[float | None],
    pixel_size_problems: Sequence[str] | None = None,
    plane_checker: PlaneChecker | None = None,
    gate: bool = True,
) -> list[ImageResult]:
    """The one measurement path: images (H_i, W_i) float in [0, 1] -> one result each.

    ``plane_checker=None`` measures without the plane check (research scoring: the HC18
    protocol scores every image); ``gate=False`` also without the quality gate."""
    images = list(images)
    problems = pixel_size_problems or [""] * len(images)
    # The plane check needs only the pixels, so it runs beside the segmenter and the
    # fits; it has half the cores (threads.beside_threads), the segmenter all of them.
    planes = beside_pool().submit(plane_checker.check_batch, images) if plane_checker is not None else None
    predictions = predictor.predict_batch(images)

    def result(index: int) -> ImageResult:
        head = fit_head(predictions[index])
        return result_from_prediction(
            predictor,
            filenames[index],
            predictions[index],
            pixel_sizes_mm[index],
            pixel_size_problem=problems[index],
            plane=planes.result()[index] if planes is not None else None,
            gate=gate,
            head=head,
            image=images[index],
        )

    if len(images) == 1:
        return [result(0)]
    # The fits of a batch are independent: side by side on the cores there are.
    return list(fit_pool().map(result, range(len(images))))


def measure(
    predictor: Predictor,
    image: np.ndarray,
    *,
    filename: str = "image",
    pixel_size_mm: float | None = None,
    pixel_size_problem: str = "",
    plane_checker: PlaneChecker | None = None,
    gate: bool = True,
) -> ImageResult:
    """One image through ``measure_batch``."""
    problems = [pixel_size_problem]
    return measure_batch(
        predictor,
        [image],
        filenames=[filename],
        pixel_sizes_mm=[pixel_size_mm],
        pixel_size_problems=problems,
        plane_checker=plane_checker,
        gate=gate,
    )[0]


def plane_checker_for(plane_check: "str | bool | PlaneChecker | None" = "on") -> PlaneChecker | None:
    """``--plane-check on|off``, a plane model name/folder, or a checker -> a checker or
    None. "on" is the shipped SonoNet-16, loaded once per process."""
    if isinstance(plane_check, PlaneChecker):
        return plane_check
    if plane_check in (None, True, "on"):
        return _shipped_plane_checker()
    if plane_check in (False, "off"):
        return None
    return PlaneChecker.from_weights(plane_check)


@functools.lru_cache(maxsize=1)
def _shipped_plane_checker() -> PlaneChecker:
    return PlaneChecker.from_weights()


def collect_inputs(
    source: str | Path, *, pixel_size_mm: float | None = None, pixel_csv: str | Path | None = None
) -> list[ImageInput]:
    """An image or DICOM file, a folder of them, a data-set folder (any layout
    ``fetometry.data.load`` reads: HC18, images/ + CSV), a list file (``.txt``, one path a
    line) or a glob (``"scans/**/*.dcm"``) -> inputs with pixel sizes.

    Precedence: an explicit pixel size for all images, else the given CSV, else the CSV
    of the data-set folder, else (read later, in ``_read_all``) a DICOM file's own
    calibration. A folder is read flat (its sub-folders are not); a list file or a glob
    reaches any depth. Raises FileNotFoundError when there is nothing to read.
    """
    from fetometry.archive.listing import is_glob, is_list_file, iter_input_paths, wanted

    if pixel_size_mm is not None:
        pixel_size_mm = validate_pixel_size(pixel_size_mm, source="--pixel-size")
    table: dict[str, float | None] = read_pixel_size_csv(pixel_csv) if pixel_csv else {}
    path = Path(source)
    if is_glob(source) or is_list_file(path):
        paths = list(iter_input_paths(source))
        if not paths:
            raise FileNotFoundError(f"{source}: lists no inputs")
    elif path.is_file():
        paths = [path]
    elif path.is_dir() and detect_layout(path) is not None and not pixel_csv:
        samples = load(path)
        if any(s.pixel_size_mm is not None for s in samples):  # a folder data set may have no CSV
            table = {s.name: s.pixel_size_mm for s in samples}
        paths = [s.image_path for s in samples]
    elif path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and wanted(p))
        if not paths:
            raise FileNotFoundError(f"{source}: no images ({', '.join(INPUT_SUFFIXES)})")
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")
    return [input_for(p, pixel_size_mm=pixel_size_mm, table=table) for p in paths]


def input_for(path: Path, *, pixel_size_mm: float | None, table: dict[str, float | None]) -> ImageInput:
    """One path with its pixel size: the explicit one, else the CSV's, else none (yet)."""
    if pixel_size_mm is not None:
        return ImageInput(path, pixel_size_mm)
    if path.name in table and table[path.name] is not None:
        return ImageInput(path, table[path.name])
    if path.name in table:
        return ImageInput(path, None, f"the CSV's pixel size for {path.name} is missing or outside 0.01-1.0 mm")
    if table:
        return ImageInput(path, None, f"{path.name} is not in the pixel-size CSV")
    return ImageInput(path, None)


def _read_all(inputs: Sequence[ImageInput]):
    """Yield (input, image or None, error message); a DICOM without a stated pixel size
    is calibrated by its own header."""
    for item in inputs:
        try:
            read = read_input(item.path)
        except ImageReadError as error:
            yield item, None, str(error)
            continue
        yield (_with_dicom_calibration(item, read) if read.kind == "dicom" else item), read.pixels, ""


def _with_dicom_calibration(item: ImageInput, read: InputPixels) -> ImageInput:
    """A stated pixel size (--pixel-size, the CSV) wins; else the DICOM's, else a reason."""
    if item.pixel_size_mm is not None:
        return item
    if read.pixel_size_mm is None:
        reason = f"no pixel size (DICOM: {read.calibration}); give --pixel-size MM or --pixel-csv CSV"
        return replace(item, pixel_size_problem=item.pixel_size_problem or reason)
    try:
        return replace(item, pixel_size_mm=validate_pixel_size(read.pixel_size_mm, source="DICOM calibration"))
    except ValueError as error:
        return replace(item, pixel_size_problem=str(error))


#: Batches measured at once by ``predict_images``.
BATCHES_IN_FLIGHT = 2


def predict_images(
    predictor: Predictor,
    inputs: Sequence[ImageInput],
    *,
    progress: bool = True,
    gate: bool = True,
    plane_checker: PlaneChecker | None = None,
) -> list[ImageResult]:
    """Segment and measure every input; unreadable files get a row, not a crash.

    ``gate=False`` measures every fitted ellipse without the quality gate: how a
    benchmark scores a model (the HC18 protocol has no option to decline an image);
    ``plane_checker`` adds the plane check (``plane_checker_for("on")``)."""
    bar = tqdm(total=len(inputs), desc="measuring", unit="img", disable=not progress)
    # Rows in the order they are known (a batch's rows when it is measured); two batches
    # are measured at once, so one's fits overlap the other's network and plane check.
    slots: list[list[ImageResult] | Future] = []
    in_flight: deque[Future] = deque()
    batch: list[tuple[ImageInput, np.ndarray]] = []

    def measure_now(items: list[tuple[ImageInput, np.ndarray]]) -> list[ImageResult]:
        rows = measure_batch(
            predictor,
            [image for _, image in items],
            filenames=[item.path.name for item, _ in items],
            pixel_sizes_mm=[item.pixel_size_mm for item, _ in items],
            pixel_size_problems=[item.pixel_size_problem for item, _ in items],
            plane_checker=plane_checker,
            gate=gate,
        )
        bar.update(len(items))
        return rows

    with ThreadPoolExecutor(max_workers=BATCHES_IN_FLIGHT, thread_name_prefix="fetometry-batch") as batches:

        def flush() -> None:
            future = batches.submit(measure_now, list(batch))
            slots.append(future)
            in_flight.append(future)
            batch.clear()
            if len(in_flight) >= BATCHES_IN_FLIGHT:  # bounds the decoded images held in memory
                in_flight.popleft().result()

        # Files are decoded in a background thread while the batches before them are measured.
        for item, image, error in prefetch(_read_all(inputs), depth=2 * predictor.batch_size):
            if image is None:
                log.warning("%s", error)
                slots.append(
                    [
                        ImageResult(
                            item.path.name, UNREADABLE, error, pixel_size_mm=item.pixel_size_mm, model=predictor.name
                        )
                    ]
                )
                bar.update(1)
                continue
            batch.append((item, image))
            if len(batch) == predictor.batch_size:
                flush()
        if batch:
            flush()
        results = [row for slot in slots for row in (slot.result() if isinstance(slot, Future) else slot)]
    bar.close()
    return results


def write_predictions(results: Sequence[ImageResult], out_dir: str | Path) -> Path:
    """Write DIR/measurements.csv and DIR/masks/<stem>_mask.png (uint8 0/255, input size)."""
    out_dir = Path(out_dir)
    write_masks(results, out_dir)
    csv_path = out_dir / "measurements.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(results))
    return csv_path


def csv_rows(results: Sequence[ImageResult]) -> list[dict[str, str]]:
    """measurements.csv rows as text, one per result: what both engines write."""
    return [{k: csv_cell(v) for k, v in result.to_dict().items()} for result in results]


def write_masks(results: Sequence[ImageResult], out_dir: str | Path) -> None:
    """DIR/masks/<stem>_mask.png for every result with a prediction."""
    masks = Path(out_dir) / "masks"
    masks.mkdir(parents=True, exist_ok=True)
    for result in results:
        if result.prediction is not None:
            write_mask(masks / f"{Path(result.filename).stem}_mask.png", result.prediction.mask)


def predict_path(
    source: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    pixel_size_mm: float | None = None,
    pixel_csv: str | Path | None = None,
    tta: bool = False,
    progress: bool = True,
    plane_check: str | bool = "on",
    backend: str = "auto",
) -> list[ImageResult]:
    """`fetometry predict`: measure every image under ``source`` into ``out_dir``
    (``backend``: fetometry.inference.backend, auto | torch | onnx)."""
    from fetometry.inference.backend import build_predictor

    inputs = collect_inputs(source, pixel_size_mm=pixel_size_mm, pixel_csv=pixel_csv)
    predictor = build_predictor(model, backend, tta=tta)
    results = predict_images(predictor, inputs, progress=progress, plane_checker=plane_checker_for(plane_check))
    write_predictions(results, out_dir)
    return results
