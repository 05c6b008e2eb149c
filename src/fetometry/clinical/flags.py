"""Clinical flags from z-scores, centiles and EFW: signs to review, never a diagnosis.

Every flag has a ``code`` (stable, for software), a ``severity`` (``info`` < ``warning``
< ``alert``) and a ``message`` (for people). Thresholds and their sources:

- Head size, on the INTERGROWTH-21st HC z-score (needs an independent GA):
  ``microcephaly`` (alert) HC <= -3 SD, the prenatal definition (Chervenak FA, Jeanty P,
  Cantraine F, et al. The diagnosis of fetal microcephaly. Am J Obstet Gynecol
  1984;149:512-517, the 3 SD criterion that SMFM still uses: Society for Maternal-Fetal
  Medicine Publications Committee, Ultrasound screening for fetal microcephaly following
  Zika virus exposure, Am J Obstet Gynecol 2016;214:B2-B4); ``small_head`` (warning)
  -3 SD < HC <= -2 SD, where SMFM (same statement) advises a detailed neurosonographic
  examination and a follow-up scan; ``macrocephaly`` (warning) HC > +2 SD, the
  symmetric 2 SD limit of the normal range (a convention, not a consensus definition).
- Smallness (SGA / signs of fetal growth restriction), on the AC centile and the EFW
  centile: ``sga_ac`` / ``sga_efw`` (warning) below the 10th centile (ISUOG Practice
  Guidelines: diagnosis and management of small-for-gestational-age fetus and fetal
  growth restriction, Lees CC, et al., Ultrasound Obstet Gynecol 2020;56:298-312);
  ``severe_sga_ac`` / ``severe_sga_efw`` (alert) below the 3rd centile, on its own a
  criterion ("solitary parameter") of early and of late fetal growth restriction in the
  Delphi consensus (Gordijn SJ, Beune IM, Thilaganathan B, et al., Ultrasound Obstet
  Gynecol 2016;48:333-339; abstract: "three solitary parameters (abdominal circumference
  (AC) <3rd centile, estimated fetal weight (EFW) <3rd centile and absent end-diastolic
  flow in the umbilical artery (UA))" for early FGR, "two solitary parameters (AC or
  EFW <3rd centile)" for late FGR).
- Largeness: ``lga_ac`` / ``lga_efw`` (warning) above the 90th centile (the usual LGA
  limit, symmetric to SGA's 10th; ACOG Practice Bulletin No. 216, Macrosomia, 2020);
  ``macrosomia`` EFW > 4000 g (warning) or > 4500 g (alert) (ACOG Practice Bulletin
  No. 216, Obstet Gynecol 2020;135:e18-e35). Macrosomia needs no GA.
- Head shape: ``dolichocephaly`` (cephalic index < 74) / ``brachycephaly`` (> 83) (info):
  the BPD misdates such heads; HC is the better measure (Hadlock FP, Deter RL, Carpenter
  RJ, Park SK. Estimating fetal age: effect of head shape on BPD. AJR 1981;137:83-85:
  cephalic index 78.3 +/- 4.4 (1 SD), i.e. about 74-83).
- Plausibility: ``implausible_<measure>`` (warning: check the input), a value beyond the
  plausibility limit for the stated GA (see ``fetometry.clinical.plausibility``). It
  replaces every size flag of that measure and is never an alert: a cm/mm mix-up or a
  wrong dating is not a microcephaly, and a number that cannot be true is named so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fetometry.clinical.efw import MACROSOMIA_G, SEVERE_MACROSOMIA_G
from fetometry.clinical.inputs import InvalidInputError, optional_number
from fetometry.clinical.plausibility import IMPLAUSIBLE, Plausibility

SEVERITIES = ("info", "warning", "alert")

MICROCEPHALY_Z = -3.0
SMALL_HEAD_WORKUP_Z = -2.0
MACROCEPHALY_Z = 2.0
SGA_CENTILE = 10.0
SEVERE_SGA_CENTILE = 3.0
LGA_CENTILE = 90.0
#: Normal cephalic index (BPD/OFD*100) in utero: mean 78.3, +/- 1 SD = 74-83 (Hadlock 1981).
CEPHALIC_INDEX_RANGE = (74.0, 83.0)


@dataclass(frozen=True)
class Flag:
    """One finding to review: ``code`` for software, ``message`` for people."""

    code: str
    severity: str
    message: str

    def __post_init__(self) -> None:
        for name in ("code", "severity", "message"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"a flag's {name} must be text, got {getattr(self, name)!r}")
        if self.severity not in SEVERITIES:
            raise InvalidInputError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def head_size_flags(hc_z: float | None) -> list[Flag]:
    """Small / large head from the HC z-score (None: no GA, no flag)."""
    hc_z = optional_number(hc_z, "HC z-score", "SD")
    if hc_z is None:
        return []
    if hc_z <= MICROCEPHALY_Z:
        return [
            Flag(
                "microcephaly",
                "alert",
                f"HC z-score {hc_z:.2f} is at or below -3 SD: prenatal microcephaly range. "
                "Check the measurement and the dating; specialist assessment is advised.",
            )
        ]
    if hc_z <= SMALL_HEAD_WORKUP_Z:
        return [
            Flag(
                "small_head",
                "warning",
                f"HC z-score {hc_z:.2f} is at or below -2 SD: small head. "
                "Check the measurement and the dating; consider a work-up and follow-up scans.",
            )
        ]
    if hc_z > MACROCEPHALY_Z:
        return [
            Flag(
                "macrocephaly",
                "warning",
                f"HC z-score {hc_z:.2f} is above +2 SD: large head (macrocephaly range). "
                "Check the measurement and the dating; consider further assessment.",
            )
        ]
    return []


def _centile(value: float | None, name: str) -> float | None:
    checked = optional_number(value, name, "centile points")
    if checked is not None and not 0.0 <= checked <= 100.0:
        raise InvalidInputError(f"{name} must be between 0 and 100, got {value!r}")
    return checked


def _smallness(label: str, suffix: str, value_centile: float | None) -> list[Flag]:
    if value_centile is None:
        return []
    if value_centile < SEVERE_SGA_CENTILE:
        return [
            Flag(
                f"severe_sga_{suffix}",
                "alert",
                f"{label} is below the 3rd centile ({value_centile:.1f}): a sign of fetal growth "
                "restriction. Check the measurement and the dating; assessment is advised.",
            )
        ]
    if value_centile < SGA_CENTILE:
        return [
            Flag(
                f"sga_{suffix}",
                "warning",
                f"{label} is below the 10th centile ({value_centile:.1f}): small for gestational age. "
                "Check the measurement and the dating; consider follow-up of growth.",
            )
        ]
    return []


def _largeness(label: str, suffix: str, value_centile: float | None) -> list[Flag]:
    if value_centile is None or value_centile <= LGA_CENTILE:
        return []
    return [
        Flag(
            f"lga_{suffix}",
            "warning",
            f"{label} is above the 90th centile ({value_centile:.1f}): large for gestational age. "
            "Check the measurement and the dating.",
        )
    ]


def growth_flags(ac_centile: float | None, efw_centile: float | None) -> list[Flag]:
    """SGA / severe SGA / LGA from the AC and EFW centiles (None: not available)."""
    ac_centile, efw_centile = _centile(ac_centile, "AC centile"), _centile(efw_centile, "EFW centile")
    return (
        _smallness("AC", "ac", ac_centile)
        + _smallness("EFW", "efw", efw_centile)
        + _largeness("AC", "ac", ac_centile)
        + _largeness("EFW", "efw", efw_centile)
    )


def macrosomia_flags(efw_g: float | None) -> list[Flag]:
    """EFW > 4000 g (warning) or > 4500 g (alert); needs no GA."""
    efw_g = optional_number(efw_g, "EFW", "grams", positive=True)
    if efw_g is None or efw_g <= MACROSOMIA_G:
        return []
    severe = efw_g > SEVERE_MACROSOMIA_G
    threshold = SEVERE_MACROSOMIA_G if severe else MACROSOMIA_G
    return [
        Flag(
            "macrosomia",
            "alert" if severe else "warning",
            f"EFW {efw_g:.0f} g is above {threshold:.0f} g: macrosomia range. "
            "EFW errors are about 10-15%; check the measurements.",
        )
    ]


def head_shape_flags(bpd_mm: float | None, ofd_mm: float | None) -> list[Flag]:
    """Cephalic index outside 74-83: BPD-based dating is unreliable for this head."""
    bpd_mm = optional_number(bpd_mm, "BPD", "mm", positive=True)
    ofd_mm = optional_number(ofd_mm, "OFD", "mm", positive=True)
    if bpd_mm is None or ofd_mm is None:
        return []
    index = bpd_mm / ofd_mm * 100.0
    low, high = CEPHALIC_INDEX_RANGE
    if low <= index <= high:
        return []
    code, shape = ("dolichocephaly", "long and narrow") if index < low else ("brachycephaly", "short and wide")
    return [
        Flag(
            code,
            "info",
            f"Cephalic index {index:.1f} is outside {low:g}-{high:g}: the head is {shape}. "
            "The BPD misjudges size and age for such heads; rely on the HC.",
        )
    ]


def implausible_flags(assessments: list[Plausibility]) -> list[Flag]:
    """One ``implausible_<measure>`` warning per value that is implausible for the stated GA.

    A warning to check the input, not an alert: the number cannot be used as it is, and
    an implausible value is named implausible, never turned into a size alert.
    """
    if not isinstance(assessments, (list, tuple)):
        raise InvalidInputError(f"expected a list of plausibility assessments, got {type(assessments).__name__}")
    found = []
    for item in assessments:
        if not isinstance(item, Plausibility):
            raise InvalidInputError(f"expected plausibility assessments, got {type(item).__name__} {item!r}")
        if item.status == IMPLAUSIBLE:
            found.append(Flag(f"implausible_{item.measure}", "warning", item.message or "implausible value"))
    return found
