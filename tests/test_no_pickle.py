"""No unpickling of anything a user can supply, and no CSV name that leaves its folder.

Pickle (and everything built on it: torch.load without weights_only, np.load with
allow_pickle, joblib, TorchScript) runs code from the file. Fetometry reads images,
CSVs and weights that users hand it, so:
1. a static scan of src/ forbids the unpickling APIs (resolving import aliases);
2. an audit hook watches ``pickle.find_class`` while the real load paths run, so an
   unpickle reached through any library is seen too;
3. weights load from safetensors only: a booby-trapped pickle under the weights'
   names is refused without running its payload;
4. the data loaders never follow a ``..`` name out of their folder.
"""

from __future__ import annotations

import ast
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

import fetometry
from fetometry.io.images import read_image
from fetometry.io.pixel_size import PixelSizeError, UnsafeFileNameError, read_hc18_csv
from fetometry.resources import SAMPLES_DIR, weights_root

SRC = Path(fetometry.__file__).resolve().parent

# --------------------------------------------------------------------------- static scan

#: Modules whose only purpose is (un)pickling or code loading.
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
#: Calls that unpickle or execute whatever the file holds.
FORBIDDEN_CALLS = {
    "torch.jit.load",
    "torch.package.PackageImporter",
    "pandas.read_pickle",
    "yaml.load",
    "yaml.unsafe_load",
    "yaml.full_load",
    "eval",
    "exec",
}
#: Calls allowed only with a keyword that switches pickling off.
GUARDED_CALLS = {
    "torch.load": ("weights_only", True),
    "numpy.load": ("allow_pickle", False),
    "numpy.lib.format.read_array": ("allow_pickle", False),
}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin, from every import in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword_is(call: ast.Call, name: str, value: bool) -> bool:
    for keyword in call.keywords:
        if keyword.arg == name:
            return isinstance(keyword.value, ast.Constant) and keyword.value.value is value
    return value is False and name == "allow_pickle"  # numpy's default is allow_pickle=False


def unpickling_sites(source: str, filename: str = "<src>") -> list[str]:
    """Every forbidden import or call in ``source``, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{filename}:{node.lineno}: imports {module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func, aliases)
            if name in FORBIDDEN_CALLS:
                found.append(f"{filename}:{node.lineno}: calls {name}")
            elif name in GUARDED_CALLS and not _keyword_is(node, *GUARDED_CALLS[name]):
                keyword, value = GUARDED_CALLS[name]
                found.append(f"{filename}:{node.lineno}: calls {name} without {keyword}={value}")
    return found


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("import pickle\npickle.load(open(p, 'rb'))", "imports pickle"),
        ("from joblib import load", "imports joblib"),
        ("import torch\ntorch.load(p)", "torch.load without weights_only=True"),
        ("import torch as T\nT.load(p, weights_only=False)", "torch.load without weights_only=True"),
        ("from torch import load as L\nL(p)", "torch.load without weights_only=True"),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", "numpy.load without allow_pickle=False"),
        ("import torch\ntorch.jit.load(p)", "calls torch.jit.load"),
        ("eval(text)", "calls eval"),
    ],
)
def test_the_scanner_finds_unpickling(snippet, expected):
    """Control: the scan below can fail; each of these would be reported."""
    assert any(expected in site for site in unpickling_sites(snippet)), unpickling_sites(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load(p, weights_only=True)",
        "import numpy as np\nnp.load(p)",
        "model.eval()",
        "import json\njson.load(f)",
    ],
)
def test_the_scanner_allows_safe_loading(snippet):
    assert unpickling_sites(snippet) == []


def test_no_unpickling_anywhere_in_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the scan really covers the package
    sites = [
        site
        for path in files
        for site in unpickling_sites(path.read_text(encoding="utf-8"), str(path.relative_to(SRC)))
    ]
    assert sites == [], "unpickling in src/ (use safetensors / JSON / torch.load(weights_only=True)):\n" + "\n".join(
        sites
    )


PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".npy", ".npz", ".joblib", ".h5"}


def test_shipped_files_hold_no_pickles():
    """Shipped weights are model.safetensors + JSON/Markdown; assets are images and CSVs."""
    weights = [p for p in weights_root().rglob("*") if p.is_file()] if weights_root().is_dir() else []
    shipped = [p for p in SRC.rglob("*") if p.is_file()] + weights
    assert any(p.suffix == ".png" for p in shipped)
    assert [p for p in shipped if p.suffix.lower() in PICKLE_SUFFIXES] == []
    for config in (p for p in weights if p.name == "config.json"):
        assert (config.parent / "model.safetensors").is_file(), f"{config.parent}: weights are not safetensors"


# --------------------------------------------------------------------------- audit hook


class _PickleWatch:
    """Records pickle.find_class audit events while active (audit hooks cannot be removed)."""

    active = False
    events: list[tuple] = []
    installed = False

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if cls.active and event == "pickle.find_class":
            cls.events.append(args)


@pytest.fixture
def pickle_watch():
    if not _PickleWatch.installed:
        sys.addaudithook(_PickleWatch.hook)
        _PickleWatch.installed = True
    _PickleWatch.events = []
    _PickleWatch.active = True
    try:
        yield _PickleWatch
    finally:
        _PickleWatch.active = False


class _Booby:
    """Unpickling this creates ``path``: proof that a payload ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_watch_sees_unpickling(pickle_watch, tmp_path):
    """Control: the hook records an unpickle, so the 'no events' checks below can fail."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Booby(marker)))
    assert marker.exists()
    assert any(args[1] == "open" for args in pickle_watch.events)  # ("io" or "builtins", "open")


def _tiny_weights(folder: Path) -> Path:
    from fetometry.models import create_model
    from fetometry.models.weights import save_weights

    model = create_model("attention-unet", "compact")
    save_weights(model, folder / "model.safetensors")
    config = {"model": "attention-unet", "variant": "compact", "canvas_hw": [64, 96], "threshold": 0.5}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_reading_and_predicting_never_unpickles(pickle_watch, tmp_path):
    from fetometry.data.hc18 import load_hc18
    from fetometry.inference.predictor import Predictor

    samples = load_hc18(SAMPLES_DIR)
    image = read_image(samples[0].image_path)
    assert read_hc18_csv(next(SAMPLES_DIR.glob("*.csv")))
    predictor = Predictor.from_weights(_tiny_weights(tmp_path))
    prediction = predictor.predict(image[:64, :96])
    assert prediction.probability.shape == (64, 96)
    assert pickle_watch.events == []


@pytest.mark.parametrize("disguise", ["pickle", "torch.save"])
def test_weights_load_from_safetensors_only(pickle_watch, tmp_path, disguise):
    """A booby-trapped pickle named model.safetensors, or beside it as model.pt, never runs."""
    import torch

    from fetometry.inference.predictor import Predictor
    from fetometry.models import create_model
    from fetometry.models.weights import load_weights

    folder = _tiny_weights(tmp_path / "weights")
    marker = tmp_path / "payload_ran"
    state = {"weight": _Booby(marker)}
    trap = folder / "model.safetensors"
    if disguise == "pickle":
        trap.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, trap)
    (folder / "model.pt").write_bytes(trap.read_bytes())
    with pytest.raises(Exception) as caught:
        load_weights(create_model("attention-unet", "compact"), trap)
    assert not isinstance(caught.value, AssertionError)
    with pytest.raises(Exception):
        Predictor.from_weights(folder)
    (folder / "model.safetensors").unlink()  # only model.pt left: still not loaded
    with pytest.raises(Exception):
        Predictor.from_weights(folder)
    assert not marker.exists(), "a pickle payload ran while loading weights"
    assert pickle_watch.events == []


# --------------------------------------------------------------------------- folders


def _traversal_csv(path: Path, names: list[str]) -> None:
    rows = "".join(f"{name},0.1,50\n" for name in names)
    path.write_text("filename,pixel size(mm),head circumference (mm)\n" + rows, encoding="utf-8")


@pytest.fixture
def hc18_with_secret(tmp_path):
    from fetometry.data.synthetic import write_phantom_dataset

    root = write_phantom_dataset(tmp_path / "hc18", 2, seed=0, size=(64, 96))
    (root / "secret_HC.png").write_bytes(next((root / "training_set").glob("*HC.png")).read_bytes())
    return root


def test_hc18_loader_stays_in_its_folder(hc18_with_secret):
    from fetometry.data.hc18 import load_hc18

    root = hc18_with_secret
    image_dir = root / "training_set"
    samples = load_hc18(root)
    assert samples and all(s.image_path.resolve().parent == image_dir.resolve() for s in samples)
    csv_path = root / "training_set_pixel_size_and_HC.csv"
    _traversal_csv(csv_path, [samples[0].name, "../secret_HC.png"])
    with pytest.raises(UnsafeFileNameError, match="secret_HC.png"):
        load_hc18(root)


def test_folder_loader_stays_in_its_folder(tmp_path):
    from fetometry.data.folder import load_folder
    from fetometry.data.synthetic import write_phantom_dataset

    root = write_phantom_dataset(tmp_path / "clinic", 2, seed=1, layout="folder", size=(64, 96))
    (tmp_path / "secret.png").write_bytes(next((root / "images").iterdir()).read_bytes())
    samples = load_folder(root)
    assert all((root / "images").resolve() in s.image_path.resolve().parents for s in samples)
    for name in ("../../secret.png", "/etc/passwd", "..\\secret.png"):
        _traversal_csv(root / "pixel_sizes.csv", [samples[0].name, name])
        with pytest.raises(PixelSizeError, match="bare file names"):
            load_folder(root)


def test_collect_inputs_refuses_a_traversal_csv(tmp_path):
    from fetometry.pipeline import collect_inputs

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "000_HC.png").write_bytes((SAMPLES_DIR / "training_set" / "001_HC.png").read_bytes())
    csv_path = tmp_path / "elsewhere" / "p.csv"  # not beside the images: an HC18 folder would use it
    csv_path.parent.mkdir()
    _traversal_csv(csv_path, ["000_HC.png", "../secret.png"])
    with pytest.raises(UnsafeFileNameError, match="secret.png"):
        collect_inputs(folder, pixel_csv=csv_path)
    assert collect_inputs(folder, pixel_size_mm=0.1)[0].path == folder / "000_HC.png"
    assert np.isfinite(read_image(folder / "000_HC.png")).all()
