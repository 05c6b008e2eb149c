"""Property test: no public function of fetometry.clinical raises anything but a documented
ValueError subclass, whatever it is given, and none returns NaN or infinity.

The functions are discovered, not listed: every public function and class defined in the
clinical modules (the VisitStore class, which needs a database, and ``default_url``, which
creates a folder in the home directory, are left out; their input checks are tested in
test_visits.py). A new public function is covered without editing this file.
"""

from __future__ import annotations

import inspect
import json
import math
from datetime import date, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetometry.clinical import assess, dating, efw, flags, growth, inputs, plausibility, visits
from fetometry.clinical.dating import CircularDatingError
from fetometry.clinical.growth import UnknownMeasureError
from fetometry.clinical.inputs import InvalidInputError, OutOfRangeError
from fetometry.clinical.visits import TrajectoryPoint, VisitStoreError

#: The documented errors (fetometry.clinical.inputs and the modules that define the others).
DOCUMENTED_ERRORS = (InvalidInputError, OutOfRangeError, UnknownMeasureError, CircularDatingError, VisitStoreError)
MODULES = (assess, dating, efw, flags, growth, inputs, plausibility, visits)
LEFT_OUT = {"VisitStore", "default_url"}


def _public_callables():
    found = {}
    for module in MODULES:
        for name, member in vars(module).items():
            if name.startswith("_") or name in LEFT_OUT:
                continue
            if (inspect.isfunction(member) or inspect.isclass(member)) and member.__module__ == module.__name__:
                if inspect.isclass(member) and issubclass(member, BaseException):
                    continue  # the errors themselves
                found[f"{module.__name__.rsplit('.', 1)[-1]}.{name}"] = member
    return found


PUBLIC = _public_callables()

#: Plausible-looking inputs, so that calls get past the first check and deep into formulas.
_GOOD = st.sampled_from(
    [
        "hc",
        "bpd",
        "ofd",
        "ac",
        "fl",
        "efw",
        "HC_mm",
        "lmp",
        "crl",
        "known",
        "hc_mm",
        "info",
        "alert",
        20.0,
        28.0,
        36.0,
        40.0,
        14.0,
        41.0,
        250.0,
        175.0,
        97.0,
        17.5,
        4800.0,
        3.0,
        50.0,
        97.5,
        1382.0,
        45.0,
        "2024-01-01",
        "2024-07-01",
        date(2024, 1, 1),
        datetime(2024, 7, 1, 12, 0),
        0.5,
        -3.0,
        5.0,
    ]
)
_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(10**400), max_value=10**400),  # ints beyond a float's range
    st.sampled_from([np.float64("nan"), np.float32(20.0), np.int64(250), np.bool_(True), 1e308, -0.0, 5e-324]),
)
_OTHER = st.one_of(
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.binary(max_size=4),
    st.just(complex(1, 2)),
    st.lists(st.floats(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=2),
    st.just(object()),
    st.dates(),
)
_POINTS = st.lists(
    st.builds(
        TrajectoryPoint,
        exam_id=st.integers(0, 10),
        exam_date=st.dates(),
        ga_weeks=st.one_of(st.none(), st.floats(allow_nan=True), st.floats(14, 40)),
        value=st.floats(0.1, 400),
        centile=st.one_of(st.none(), st.floats(allow_nan=True), st.floats(0, 100)),
    ),
    max_size=5,
)
ANYTHING = st.one_of(_GOOD, _NUMBERS, _OTHER, _POINTS)


def _assert_finite(value, where):
    """No NaN or infinity anywhere in a result (NaN was returned by efw_at_zscore)."""
    if isinstance(value, float):
        assert math.isfinite(value), f"{where} returned {value!r}"
    elif isinstance(value, dict):
        json.dumps(value, allow_nan=False, default=str)
        for item in value.values():
            _assert_finite(item, where)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _assert_finite(item, where)


def _call(function, args, kwargs, where):
    try:
        result = function(*args, **kwargs)
    except DOCUMENTED_ERRORS as error:
        assert isinstance(error, ValueError)
        assert str(error), f"{where}: an error without a message"
        return
    except Exception as error:  # noqa: BLE001 - the property under test
        pytest.fail(f"{where}{args!r} {kwargs!r} raised an undocumented {type(error).__name__}: {error}")
    _assert_finite(result, where)


@pytest.mark.parametrize("name", sorted(PUBLIC))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_public_function_raises_only_documented_errors(name, data):
    function = PUBLIC[name]
    parameters = list(inspect.signature(function).parameters.values())
    args, kwargs = [], {}
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is not parameter.empty and data.draw(st.booleans(), label=f"{parameter.name} given"):
            continue  # leave an optional parameter at its default
        value = data.draw(ANYTHING, label=parameter.name)
        if parameter.kind == parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = value
        else:
            args.append(value)
    _call(function, args, kwargs, name)


def test_the_property_covers_the_package_api():
    """The discovered set includes every name the package exports (and more)."""
    import fetometry.clinical as clinical

    exported = {name for name in clinical.__all__ if callable(getattr(clinical, name))}
    exported -= {"CircularDatingError", "InvalidInputError", "OutOfRangeError", "UnknownMeasureError"}
    discovered = {key.split(".", 1)[1] for key in PUBLIC}
    assert exported <= discovered, exported - discovered
    assert len(PUBLIC) >= 30


_LENGTH = st.one_of(st.none(), _NUMBERS, _OTHER, st.floats(1, 500))


@settings(max_examples=400, deadline=None)
@given(
    hc=_LENGTH,
    bpd=_LENGTH,
    ofd=_LENGTH,
    ac=_LENGTH,
    fl=_LENGTH,
    ga=st.one_of(st.none(), _NUMBERS, _OTHER, st.floats(10, 45)),
    source=st.one_of(st.none(), st.sampled_from(["lmp", "crl", "hc", "guess", "LMP "]), _OTHER),
)
def test_clinical_summary_raises_only_documented_errors(hc, bpd, ofd, ac, fl, ga, source):
    """Many keywords at once (the generic test above sets one at a time at most by chance)."""
    _call(
        assess.clinical_summary,
        (),
        dict(hc_mm=hc, bpd_mm=bpd, ofd_mm=ofd, ac_mm=ac, fl_mm=fl, ga_weeks=ga, ga_source=source),
        "clinical_summary",
    )


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.floats(1, 500), min_size=5, max_size=5), ga=st.floats(14, 40))
def test_an_implausible_value_never_raises_a_size_flag(values, ga):
    summary = assess.clinical_summary(
        hc_mm=values[0],
        bpd_mm=values[1],
        ofd_mm=values[2],
        ac_mm=values[3],
        fl_mm=values[4],
        ga_weeks=ga,
        ga_source="lmp",
    )
    measures = summary["plausibility"]["measures"]
    codes = {flag["code"] for flag in summary["flags"]}
    if measures["hc"]["status"] == "implausible":
        assert not codes & {"microcephaly", "small_head", "macrocephaly"} and summary["hc_z"] is None
    if measures["ac"]["status"] == "implausible":
        assert not codes & {"sga_ac", "severe_sga_ac", "lga_ac"} and summary["ac_centile"] is None
    if any(measures[m]["status"] == "implausible" for m in ("hc", "ac", "fl")):
        assert summary["efw_g"] is None and not codes & {"macrosomia", "sga_efw", "severe_sga_efw", "lga_efw"}
    for measure, row in measures.items():
        assert (row["status"] == "implausible") == (f"implausible_{measure}" in codes)
        if row["status"] == "plausible":
            assert abs(summary[f"{measure}_z"]) <= 5.0 + 0.005
