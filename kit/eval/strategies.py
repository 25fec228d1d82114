"""Inference strategies: how a model is asked a benchmark question (``kit.eval.evaluate`` runs them).

- ``direct``: the benchmark's standard prompt (``bench.build_prompt``).
- ``cot``: Cas-SEAT's chain-of-thought prompt around the standard prompt (the authors' stage 1,
  ``self-evaluate/evaluation/reflection.py``: ``system_prompt + query``).
- ``seat``: one pass with SEAT's long self-evaluation prompt, without an answer
  (``self-evaluate/evaluation/generate_response.py``).
- ``cas_seat``: the ``cot`` turn, then the reflection prompt as a real second chat turn on the model's own
  answer; the reflection's final answer is scored. Every item gets the second turn.
- ``cas_seat_oracle``: as the authors' released code does it: the reflection turn only for items whose
  CoT answer is already scored wrong. It reads the labels, so it is labelled ``(oracle)`` wherever it
  appears and never goes into a main table (``kit.core.deviations``: cas-seat-reflection-label-leak).

Sources: github.com/HelloZicky/Cas-SEAT @ 6d80fb4; prompts word for word in ``kit.llm.prompts``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from kit.errors import KitError

SINGLE_TURN = ("direct", "cot", "seat")
TWO_TURN = ("cas_seat", "cas_seat_oracle")
STRATEGIES = SINGLE_TURN + TWO_TURN


def check(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise KitError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return strategy


def first_prompt(strategy: str, bench: ModuleType, record: Mapping[str, Any]) -> str:
    """The first user turn of ``strategy`` for ``record``."""
    from kit.llm.prompts import get

    query = bench.build_prompt(record)
    if strategy == "direct":
        return query
    if strategy == "seat":
        return get("seat_inference").format(question=query)
    return get("cas_cot").format(question=query)  # cot, cas_seat, cas_seat_oracle


def reflection_prompt() -> str:
    from kit.llm.prompts import get

    return get("cas_reflection").text


def item_is_correct(bench: ModuleType, record: Mapping[str, Any], prediction: Any) -> bool:
    """Whether one prediction is right, by the benchmark's own rule (what the oracle strategy peeks at)."""
    if hasattr(bench, "is_correct"):
        return bool(bench.is_correct(prediction, record))
    metrics = bench.score([{**record, "prediction": prediction}])
    if "accuracy" not in metrics:
        raise KitError(f"cas_seat_oracle needs a per-item correctness rule, which {bench.NAME} does not have")
    return float(metrics["accuracy"]) == 100.0


def needs_reflection(strategy: str, bench: ModuleType, record: Mapping[str, Any], first_response: str,
                     extract: Callable[[str], Any]) -> bool:
    """Whether an item gets the reflection turn after its CoT answer."""
    if strategy == "cas_seat":
        return True
    if strategy == "cas_seat_oracle":
        return not item_is_correct(bench, record, extract(first_response))
    return False
