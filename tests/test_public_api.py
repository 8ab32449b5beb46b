"""Every name a package declares public in ``__all__`` can be imported, and ``import medfew`` stays light."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import medfew


def packages() -> list[str]:
    found = ["medfew"]
    for info in pkgutil.walk_packages(medfew.__path__, prefix="medfew."):
        if info.ispkg and ".migrations" not in info.name:
            found.append(info.name)
    return found


@pytest.mark.parametrize("package", packages())
def test_every_public_name_imports(package: str) -> None:
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    assert names, f"{package} declares no __all__"
    assert len(names) == len(set(names)), f"{package}.__all__ lists a name twice"
    for name in names:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_top_level_exports_are_the_real_objects() -> None:
    from medfew.diagnosis.session import DiagnosisSession
    from medfew.training.checkpoint import load_checkpoint

    assert medfew.DiagnosisSession is DiagnosisSession and medfew.load_checkpoint is load_checkpoint
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        medfew.nope  # noqa: B018


def test_import_medfew_does_not_import_torch_or_streamlit() -> None:
    code = "import sys, medfew, medfew.data, medfew.training; print('torch' in sys.modules, 'streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("package", ["medfew", "medfew.data", "medfew.data.sources", "medfew.data.episodes",
                                     "medfew.training"])
def test_lazy_packages_export_exactly_what_they_map(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) - {"__version__"} == set(module._WHERE)
