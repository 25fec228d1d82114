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
- Constants: ``NAME``, ``HUB_ID``, ``SPLITS``, ``DEFAULT_SPLIT``.

``kit score`` (kit/eval/benchmarks/cli.py) rescoring the official output files of each benchmark.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from kit.errors import KitError

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
