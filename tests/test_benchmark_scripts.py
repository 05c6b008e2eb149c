"""Logic of the scripts in benchmarks/ that saves their long runs work, on stand-ins
(the scripts themselves take minutes to hours on the real models)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_script_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def counted_fits(monkeypatch):
    """calibrate_residual replaced by a stand-in that counts its calls."""
    import fetometry.explain.uncertainty as uncertainty

    calls = []

    def fake_fit(predictor, samples, **kwargs):
        calls.append([s.name for s in samples])
        return {"residual_fraction": 0.02 + len(calls) / 1000, "images": len(samples)}

    monkeypatch.setattr(uncertainty, "calibrate_residual", fake_fit)
    return calls


def stand_in(folder: Path, weights: bytes = b"weights", offset: float = 1.0):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    return SimpleNamespace(config={"weights_dir": str(folder), "hc_offset_px": offset})


def samples(hc: float = 170.0):
    return [SimpleNamespace(name=f"{i:03d}_HC.png", pixel_size_mm=0.1, hc_mm=hc + i) for i in range(3)]


def test_the_residual_fit_is_computed_once_per_weights_config_and_images(tmp_path, counted_fits):
    explain = load_script("explainability")
    cache = tmp_path / "cache"
    predictor = stand_in(tmp_path / "w")
    first = explain.cached_residual_fit(predictor, samples(), cache)
    again = explain.cached_residual_fit(stand_in(tmp_path / "w"), samples(), cache)  # the second run's own predictor
    assert again == first and len(counted_fits) == 1

    # Anything the fit depends on changed: fitted again, never the other weights' fit.
    other_weights = explain.cached_residual_fit(stand_in(tmp_path / "w", weights=b"retrained"), samples(), cache)
    other_offset = explain.cached_residual_fit(stand_in(tmp_path / "w", offset=1.5), samples(), cache)
    other_images = explain.cached_residual_fit(stand_in(tmp_path / "w"), samples()[:2], cache)
    other_reference = explain.cached_residual_fit(stand_in(tmp_path / "w"), samples(hc=180.0), cache)
    assert len(counted_fits) == 5
    assert len({f["residual_fraction"] for f in (first, other_weights, other_offset, other_images, other_reference)}) == 5


def test_a_predictor_without_a_weights_folder_is_never_cached(tmp_path, counted_fits):
    explain = load_script("explainability")
    ensemble = SimpleNamespace(config={"members": ["a", "b"]})
    for _ in range(2):
        explain.cached_residual_fit(ensemble, samples(), tmp_path / "cache")
    assert len(counted_fits) == 2 and not (tmp_path / "cache").exists()
