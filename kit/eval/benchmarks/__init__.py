"""Benchmarks: one module per benchmark, each following the official evaluation code of that
benchmark, behind a small registry.

Registry::

    from kit.eval import benchmarks
    bench = benchmarks.get("mathvista")      # or "mathv", "wemath", "hallusionbench", "mme", "pope", "seed",
                                              # "scienceqa", "amber"
    benchmarks.names()                        # the canonical names, in REGISTRY order

Every benchmark module exposes the same interface, so that an evaluator can run any of them on the
real dataset or on the tiny world's copy (written in the real on-disk layout) unchanged::

    records = bench.load(source, split=bench.DEFAULT_SPLIT, limit=None)
    for r in records:
        prompt = bench.build_prompt(r)              # the benchmark's standard prompt (str)
        image = r["image_path"]                     # absolute path of the image, or None
        r["response"] = generate(image, prompt)     # the model's text
        r["prediction"] = bench.extract(r["response"], r)
    metrics = bench.score(records)                  # a JSON-serialisable dict

- ``load(source, split=..., limit=None, check_images=True, cache_dir=None) -> list[dict]``: ``source``
  is a local folder in the official layout or a Hugging Face hub id (``bench.HUB_ID``; embedded images
  are written once under ``data/cache/hub_images/``). Records keep the official fields and add
  ``image_path``. A missing file, a record without a required field or a missing image raises
  ``KitError`` naming the file and the record (``bench.record_id(record)``).
- ``build_prompt(record) -> str``.
- ``extract(response, record)`` returns the benchmark's answer: a string, ``None`` when the rules find
  no answer (MathVista without an LLM, We-Math, HallusionBench, SEED-Bench), ``""`` for an empty
  MathVista response; MATH-V always returns a string, MME one of ``yes``/``no``/``other``, POPE
  ``yes``/``no``, ScienceQA a letter or ``FAILED``, AMBER the description (generative) or
  ``Yes``/``No``. It never raises on arbitrary text. MathVista's ``extract`` also takes
  ``llm=callable(prompt) -> str`` for the official LLM extractor.
- ``score(records) -> dict``: records carry the problem fields plus ``prediction`` (the return of
  ``extract``); a record with only ``response`` is extracted by rules. Extra options: MathVista
  ``int_rule="legacy"|"current"``; MATH-V ``gt=`` (id -> problem) for output files that hold only
  ``id``/``response``; HallusionBench ``chat=`` (the official GPT-style judge; rule-based without);
  AMBER ``nouns=``/``similarity=`` (the official nltk/spaCy resources or the documented fallback).
- ``read_outputs(path, *, <options>) -> Outputs``: reads the model outputs the benchmark's own code (or
  LLaVA's scripts) release, in that layout (a JSON or JSON-lines file; MME a folder of ``<subtask>.txt``),
  together with whatever ground truth the layout lacks, and returns ``Outputs``: the ``records`` for
  ``score``, the extra keyword ``options`` ``score`` needs for them (MathVista ``int_rule``, MATH-V ``gt``,
  SEED-Bench ``names``, AMBER ``data``/``nouns``/``similarity``), ``where`` (the file or folder read) and
  ``kind`` (``"file"``, or ``"dir"`` for MME). Its keyword-only parameters are the options of
  ``kit score <name>`` (named as their argparse ``dest``: ``--int-rule`` is ``int_rule``, AMBER's
  ``--extract`` ``extract_answers``); a malformed file raises ``KitError`` naming the file and the item.
- Constants: ``NAME``, ``HUB_ID``, ``SPLITS``, ``DEFAULT_SPLIT``; what a results table reports of it:
  ``TITLE`` (the benchmark's name as the papers write it), ``HEADLINES`` (its ``Metric`` columns, in table
  order) and ``HEADLINE_METRIC`` (the label of the one column that stands for it where a single number per
  benchmark is needed). ``Benchmark`` lists the interface.

So everything about a benchmark lives in its module: ``kit score`` (kit/eval/benchmarks/cli.py) declares
only each sub-command's arguments and runs, for any benchmark,
``outputs = bench.read_outputs(path, **options)`` then ``bench.score(outputs.records, where=outputs.where,
**outputs.options)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from kit.errors import KitError


@dataclass(frozen=True)
class Metric:
    """One headline number of a benchmark: the column ``label`` of the results tables, the ``keys`` leading to
    it in ``score``'s metrics, and whether a higher value is better."""

    label: str
    keys: tuple[str, ...]
    higher_is_better: bool = True


@dataclass(frozen=True)
class Outputs:
    """What a benchmark's ``read_outputs`` read from released model outputs: the ``records`` to ``score``, the
    extra keyword ``options`` its ``score`` needs for them, ``where`` (the file or folder read: ``score``'s
    ``where=`` and the path ``kit score`` reports) and ``kind``, the key under which ``kit score`` reports it
    (``"file"``; MME's outputs are a ``"dir"``)."""

    records: list[dict]
    where: str
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = "file"


class Benchmark(Protocol):
    """The interface every benchmark module exposes (see the module docstring)."""

    NAME: str
    HUB_ID: str
    SPLITS: tuple[str, ...]
    DEFAULT_SPLIT: str
    TITLE: str
    HEADLINES: tuple[Metric, ...]
    HEADLINE_METRIC: str

    def load(self, source: str | Path, split: str = ..., limit: int | None = None, **options: Any) -> list[dict]: ...

    def build_prompt(self, record: Mapping[str, Any]) -> str: ...

    def extract(self, response: str, record: Mapping[str, Any]) -> Any: ...

    def score(self, records: list[Mapping[str, Any]], **options: Any) -> dict: ...

    def record_id(self, record: Mapping[str, Any]) -> Any: ...

    def read_outputs(self, path: str | Path, **options: Any) -> Outputs: ...


# The members of ``Benchmark``, in its order: what a module given in place of a benchmark's name must have.
INTERFACE: tuple[str, ...] = (*Benchmark.__annotations__,
                              *(name for name, member in vars(Benchmark).items()
                                if not name.startswith("_") and callable(member)))


# canonical name -> module
REGISTRY: dict[str, str] = {
    "mathvista": "kit.eval.benchmarks.mathvista",
    "mathv": "kit.eval.benchmarks.mathv",
    "wemath": "kit.eval.benchmarks.wemath",
    "hallusionbench": "kit.eval.benchmarks.hallusionbench",
    "mme": "kit.eval.benchmarks.mme",
    "pope": "kit.eval.benchmarks.pope",
    "seed": "kit.eval.benchmarks.seed",
    "scienceqa": "kit.eval.benchmarks.scienceqa",
    "amber": "kit.eval.benchmarks.amber",
}
ALIASES: dict[str, str] = {
    "math-v": "mathv",
    "math-vision": "mathv",
    "mathvision": "mathv",
    "we-math": "wemath",
    "hallusion_bench": "hallusionbench",
    "hallusion-bench": "hallusionbench",
    "seed-bench": "seed",
    "seedbench": "seed",
    "seed_bench": "seed",
    "sqa": "scienceqa",
    "scienceqa-img": "scienceqa",
    "sqa-img": "scienceqa",
}


def names() -> list[str]:
    """The canonical benchmark names."""
    return list(REGISTRY)


def get(name: str) -> ModuleType:
    """The module of benchmark ``name`` (canonical name or alias, case-insensitive)."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise KitError(f"unknown benchmark {name!r}; expected one of {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[key])
