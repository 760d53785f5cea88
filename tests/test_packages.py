"""Rules that hold over the four packages: modules stay readable, errors share one base.

- No module of `vision`, `training`, `inference` or `review` reaches 500 lines (split by
  concept first).
- Every exception class the packages define derives from `vision.errors.VisionError`, so the
  CLI turns each into a message and an exit code (a `RuntimeError` of our own ended in a
  traceback) and callers can catch the project's errors as one family.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from vision.errors import VisionError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vision", "training", "inference", "review")


def test_no_module_of_the_packages_reaches_500_lines() -> None:
    long = {str(p.relative_to(REPO)): n for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) >= 500}
    assert long == {}


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, f"{pkg}.")
                  if ".migrations" not in m.name and not m.name.endswith("__main__")]
    return names


def test_every_exception_of_the_packages_is_a_vision_error() -> None:
    found: dict[str, type] = {}
    for name in _modules():
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name):
                found[f"{name}.{obj.__qualname__}"] = obj
    assert len(found) > 30, sorted(found)  # the walk sees the packages' errors
    stray = sorted(n for n, cls in found.items() if not issubclass(cls, VisionError))
    assert stray == []
