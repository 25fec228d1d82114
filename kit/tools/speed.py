"""``kit bench``: measure the kit's hot paths on this machine.

``kit bench evaluate`` runs the batched evaluator (``kit.eval.evaluate.evaluate``) and a one-at-a-time loop
(the same evaluator with batch size 1: same items, same greedy settings) on one model, prints items/s
for both, how many responses and extracted predictions differ (greedy decoding, so none should, short of
float rounding changed by padding), and ends with ``speedup: X.XX``.

Each sub-command is one function decorated with ``@command`` that adds its parser and sets ``func``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kit import REPO_DIR
from kit.errors import KitError

DEFAULT_MODEL = REPO_DIR / "data" / "models" / "tiny-qwen2vl-teacher"
DEFAULT_WORLD = REPO_DIR / "data" / "tiny"
# benchmark -> its folder in the tiny world, where the two names differ
WORLD_FOLDERS = {"mathv": "mathvision"}
# Above this share of differing responses the batched path is broken (padding side, masks), not rounding.
MAX_DIFFERING_SHARE = 0.10

_COMMANDS: list[Callable[[Any], None]] = []


def command(add: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register ``add(subparsers)``, which adds one ``kit bench`` sub-command."""
    _COMMANDS.append(add)
    return add


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="measure throughput of the kit's hot paths")
    sub = parser.add_subparsers(dest="bench_command", required=True)
    for add in _COMMANDS:
        add(sub)


# ------------------------------------------------------------------------------------------ evaluate
def _default_source(benchmark: str) -> Path:
    from kit.eval import benchmarks

    name = benchmarks.get(benchmark).NAME
    folder = DEFAULT_WORLD / WORLD_FOLDERS.get(name, name)
    if not folder.is_dir():
        raise KitError(f"{folder} is missing; build the tiny world with `kit world build` or pass --source")
    return folder


def build_random_qwen2vl(folder: Path, world: Path = DEFAULT_WORLD) -> Path:
    """A randomly initialised tiny Qwen2-VL of the teacher's size, with a tokenizer trained on the world's
    texts, saved to ``folder``; it stands in for the teacher when no trained one exists."""
    from kit.llm.models import QWEN2VL, save
    from kit.tiny.models import build_tiny, train_tokenizer
    from kit.tiny.pretrain import SPECS, corpus_texts

    if not (world / "MANIFEST.json").is_file():
        raise KitError(f"{world / 'MANIFEST.json'} is missing; build the tiny world first with `kit world build`")
    size = SPECS["tiny-qwen2vl-teacher"].size
    tokenizer = train_tokenizer(corpus_texts(world), QWEN2VL, size.vocab)
    model, processor = build_tiny(QWEN2VL, tokenizer, size, seed=0)
    return save(model, processor, folder)


def _responses(path: Path) -> dict[str, dict]:
    return {line["id"]: line for line in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if line}


def bench_evaluate(
    model: Any,
    benchmark: str = "mathvista",
    *,
    source: str | Path,
    n: int = 64,
    batch_size: int = 32,
    max_new_tokens: int = 96,
    log: Callable[[str], None] = print,
) -> dict:
    """Time ``evaluate`` on the first ``n`` items batched and one at a time. Returns the items/s of each
    way, the speedup and the number of items whose response or extracted prediction differ."""
    from kit.eval.evaluate import evaluate
    from kit.llm.models import load_model

    if n < 1 or batch_size < 1:
        raise KitError(f"bench evaluate: --n and --batch-size must be >= 1 (got {n} and {batch_size})")
    loaded = load_model(model)
    options = {"source": source, "limit": n, "max_new_tokens": max_new_tokens, "progress": False}
    # One untimed item first, so lazy initialisation is charged to neither way.
    evaluate(loaded, benchmark, batch_size=1, **{**options, "limit": 1})
    with tempfile.TemporaryDirectory(prefix="kit-bench-") as tmp:
        timings = {}
        for label, size in (("batched", batch_size), ("one-at-a-time", 1)):
            path = Path(tmp) / f"{label}.jsonl"
            started = time.perf_counter()
            metrics = evaluate(loaded, benchmark, batch_size=size, predictions_path=path, **options)
            seconds = time.perf_counter() - started
            timings[label] = {"seconds": seconds, "items": metrics["n"], "items_per_s": metrics["n"] / seconds}
            log(f"{label:>14s} (batch size {size:3d}): {metrics['n']} items in {seconds:7.2f} s = "
                f"{metrics['n'] / seconds:8.2f} items/s")
        batched, single = _responses(Path(tmp) / "batched.jsonl"), _responses(Path(tmp) / "one-at-a-time.jsonl")
    if batched.keys() != single.keys():
        raise KitError("bench evaluate: the two runs generated different items")
    responses_differ = sum(batched[k]["response"] != single[k]["response"] for k in batched)
    predictions_differ = sum(batched[k]["prediction"] != single[k]["prediction"] for k in batched)
    return {
        "items": len(batched),
        "batched_items_per_s": timings["batched"]["items_per_s"],
        "single_items_per_s": timings["one-at-a-time"]["items_per_s"],
        "speedup": timings["batched"]["items_per_s"] / timings["one-at-a-time"]["items_per_s"],
        "responses_differ": responses_differ,
        "predictions_differ": predictions_differ,
    }


@command
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="batched evaluator against a one-at-a-time loop: items/s, speedup")
    parser.add_argument("--model", default=None,
                        help=f"model folder or hub id (default: {DEFAULT_MODEL.relative_to(REPO_DIR)} if built, "
                             "else a randomly initialised tiny Qwen2-VL of the same size)")
    parser.add_argument("--benchmark", default="mathvista", help="benchmark name (default: mathvista)")
    parser.add_argument("--source", type=Path, default=None,
                        help="benchmark folder or hub id (default: the tiny world's copy)")
    parser.add_argument("--n", type=int, default=64, help="number of items (default: 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the batched run (default: 32)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="generation budget (default: 96)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    if args.threads < 1:
        raise KitError(f"bench evaluate: --threads must be >= 1, not {args.threads}")
    torch.set_num_threads(args.threads)
    source = args.source if args.source is not None else _default_source(args.benchmark)
    with tempfile.TemporaryDirectory(prefix="kit-bench-model-") as tmp:
        model = args.model
        if model is None and DEFAULT_MODEL.is_dir():
            model = DEFAULT_MODEL
        elif model is None:
            model = build_random_qwen2vl(Path(tmp) / "tiny-qwen2vl-random")
            print(f"{DEFAULT_MODEL} is not built: using a randomly initialised tiny Qwen2-VL of the teacher's "
                  f"size saved to {model} (it never stops early, so every item runs the full token budget)")
        print(f"model {model}, benchmark {args.benchmark} ({source}), {args.n} items, "
              f"max_new_tokens {args.max_new_tokens}, {args.threads} thread(s)")
        result = bench_evaluate(model, args.benchmark, source=source, n=args.n, batch_size=args.batch_size,
                                max_new_tokens=args.max_new_tokens)
    items = result["items"]
    print(f"responses differing: {result['responses_differ']}/{items}, "
          f"extracted predictions differing: {result['predictions_differ']}/{items}")
    print(f"speedup: {result['speedup']:.2f}")
    if result["responses_differ"] > math.floor(MAX_DIFFERING_SHARE * items):
        print(f"error: more than {MAX_DIFFERING_SHARE:.0%} of the responses differ; batched generation is broken")
        return 1
    return 0


# ------------------------------------------------------------------------------------------ generation
def bench_generation(
    model: Any,
    *,
    source: str | Path,
    prompt_id: str = "cas_cot",
    n: int = 256,
    batch_size: int = 64,
    max_new_tokens: int = 128,
    log: Callable[[str], None] = print,
) -> dict:
    """Synthesis prompts for the first ``n`` MathV360K items, generated by the transformers engine in
    batches and one at a time (batch size 1: a plain ``generate`` per prompt). Returns sequences/s of each
    way, the speedup and how many outputs differ."""
    from kit.casseat.mathv360k import load_source
    from kit.casseat.synthesis import chat_for
    from kit.llm.generate import Sampling, TransformersEngine

    if n < 1 or batch_size < 1:
        raise KitError(f"bench generation: --n and --batch-size must be >= 1 (got {n} and {batch_size})")
    items = load_source(source, limit=n)
    chats = [chat_for(item, prompt_id, 0, cot_response="Step 1: ...\nThe answer is 1")
             if prompt_id == "cas_reflection" else chat_for(item, prompt_id, 0) for item in items]
    sampling = Sampling(max_new_tokens=max_new_tokens)
    engines = {"batched": TransformersEngine(model, batch_size=batch_size)}
    engines["one-at-a-time"] = TransformersEngine(engines["batched"].loaded, batch_size=1)
    list(engines["one-at-a-time"].generate(chats[:1], sampling))  # warm-up, charged to neither way
    outputs, rates = {}, {}
    for label, engine in engines.items():
        started = time.perf_counter()
        outputs[label] = {chat.id: text for chat, text in engine.generate(chats, sampling)}
        seconds = time.perf_counter() - started
        rates[label] = len(chats) / seconds
        log(f"{label:>14s} (batch size {engine.batch_size:3d}): {len(chats)} sequences in {seconds:7.2f} s = "
            f"{rates[label]:8.2f} sequences/s")
    differ = sum(outputs["batched"][k] != outputs["one-at-a-time"][k] for k in outputs["batched"])
    return {"sequences": len(chats), "batched_per_s": rates["batched"], "single_per_s": rates["one-at-a-time"],
            "speedup": rates["batched"] / rates["one-at-a-time"], "outputs_differ": differ}


@command
def _add_generation(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generation", help="batched generation engine against a one-at-a-time loop: "
                                               "sequences/s, speedup")
    parser.add_argument("--model", default=None,
                        help=f"model folder or hub id (default: {DEFAULT_MODEL.relative_to(REPO_DIR)})")
    parser.add_argument("--source", type=Path, default=DEFAULT_WORLD / "mathv360k",
                        help="MathV360K folder (default: the tiny world's)")
    parser.add_argument("--prompt", default="cas_cot", choices=["seat_synthesis", "cas_cot", "cas_reflection"],
                        help="synthesis prompt (default: cas_cot)")
    # Defaults are the tiny profile's synthesis settings (batch 64, 2 threads on a 2-core machine).
    parser.add_argument("--n", type=int, default=256, help="number of prompts (default: 256)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the batched run (default: 64)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="generation budget (default: 128)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.set_defaults(func=_cmd_generation)


def _cmd_generation(args: argparse.Namespace) -> int:
    import torch

    if args.threads < 1:
        raise KitError(f"bench generation: --threads must be >= 1, not {args.threads}")
    torch.set_num_threads(args.threads)
    model = args.model or DEFAULT_MODEL
    if args.model is None and not DEFAULT_MODEL.is_dir():
        raise KitError(f"{DEFAULT_MODEL} is not built; run `kit models build --only tiny-qwen2vl-teacher` or pass --model")
    print(f"model {model}, prompt {args.prompt}, {args.n} items of {args.source}, "
          f"max_new_tokens {args.max_new_tokens}, {args.threads} thread(s)")
    result = bench_generation(model, source=args.source, prompt_id=args.prompt, n=args.n,
                              batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    print(f"outputs differing: {result['outputs_differ']}/{result['sequences']}")
    print(f"speedup: {result['speedup']:.2f}")
    if result["outputs_differ"] > math.floor(MAX_DIFFERING_SHARE * result["sequences"]):
        print(f"error: more than {MAX_DIFFERING_SHARE:.0%} of the outputs differ; batched generation is broken")
        return 1
    return 0


# ------------------------------------------------------------------------------------------ train
def bench_examples(source: str | Path, n: int) -> list[dict]:
    """``n`` Cas-SEAT CoT-style training examples from a MathV360K folder's gold answers (no synthesis
    needed): the chain-of-thought prompt and a one-step answer, with the image."""
    from kit.casseat.mathv360k import load_source
    from kit.llm.prompts import get
    from kit.training.data import conversation

    return [{"id": item.id, "kind": "cot", "images": [item.image], "train_turns": [0],
             "messages": conversation([get("cas_cot").format(question=item.question),
                                       f"Step 1: Look at the image.\nThe answer is {item.answer}"], item.image)}
            for item in load_source(source, limit=n)]


def plain_loop(model_source: Any, examples: list[dict], settings: Any, steps: int) -> dict[str, float]:
    """The arithmetic the peft backend pays for, without the trainer: the same model, LoRA adapter, batches and
    loss mask (``TurnMaskingCollator``, every batch collated before the clock starts), trained by a plain
    PyTorch loop with AdamW. Returns samples/s over ``steps`` steps after one warm-up step."""
    import torch
    from peft import get_peft_model

    from kit.llm.models import load
    from kit.training.common import lora_config, lora_targets
    from kit.training.sft import TurnMaskingCollator

    loaded = load(model_source, trainable=True)
    torch.manual_seed(settings.seed)
    model = get_peft_model(loaded.model, lora_config(settings, lora_targets(loaded.model, settings)))
    model.train()
    collate = TurnMaskingCollator(loaded.processor)
    size = settings.batch_size
    collating = time.perf_counter()
    batches = [collate([examples[(step * size + i) % len(examples)] for i in range(size)]) for step in range(steps + 1)]
    collate_seconds = time.perf_counter() - collating
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    started = 0.0
    for step, batch in enumerate(batches):
        if step == 1:  # the first step pays for allocations the trainer pays for too, once
            started = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return {"samples_per_s": steps * size / seconds, "seconds": seconds, "collate_seconds": collate_seconds}


def bench_train(model: Any, *, source: str | Path, n: int = 256, steps: int = 30, batch_size: int = 8,
                backends: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Train ``steps`` LoRA steps with each available backend on the same model and examples, and the same
    steps in a plain PyTorch loop (``plain_loop``); returns samples/s and peak memory per backend."""
    from kit.training.sft import SFTSettings, choose_backend, sft

    examples = bench_examples(source, n)
    if backends is None:
        backends = ["peft"] + (["unsloth"] if choose_backend("auto")[0] == "unsloth" else [])
    settings = SFTSettings(max_steps=steps, batch_size=batch_size, learning_rate=1e-4, logging_steps=steps)
    results = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="kit-bench-train-") as tmp:
            result = sft(model, examples, Path(tmp) / "adapter", dataclasses.replace(settings, backend=backend),
                         log=lambda message: None)
        results[backend] = {"samples_per_s": result.samples_per_second, "peak_memory_mb": result.peak_memory_mb,
                            "seconds": result.seconds, "setup_seconds": result.setup_seconds,
                            "reason": result.backend_reason}
        log(f"{backend:>8s}: {result.samples_per_second:8.2f} samples/s, peak memory {result.peak_memory_mb:8.1f} MB "
            f"({steps} steps of {batch_size}; {result.backend_reason}; {result.setup_seconds:.1f} s before the "
            "first step: model, rendering every example once, trainer)")
    plain = plain_loop(model, examples, settings, steps)
    results["plain"] = plain
    log(f"{'plain':>8s}: {plain['samples_per_s']:8.2f} samples/s (a plain PyTorch loop on batches collated beforehand, "
        f"{plain['collate_seconds']:.1f} s; the first step not timed)")
    return results


@command
def _add_train(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="LoRA fine-tuning samples/s and peak memory per available backend")
    parser.add_argument("--model", default=str(REPO_DIR / "data" / "models" / "tiny-qwen2vl-student"),
                        help="model folder or hub id (default: the tiny student)")
    parser.add_argument("--source", type=Path, default=DEFAULT_WORLD / "mathv360k",
                        help="MathV360K folder the examples come from (default: the tiny world's)")
    parser.add_argument("--n", type=int, default=256, help="examples (default: 256)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per backend (default: 30)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default: 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    print(f"model {args.model}, {args.n} examples of {args.source}, {args.steps} steps of {args.batch_size}, "
          f"{'CUDA' if torch.cuda.is_available() else f'CPU, {args.threads} thread(s)'}")
    results = bench_train(args.model, source=args.source, n=args.n, steps=args.steps, batch_size=args.batch_size)
    print(f"ratio: {results['peft']['samples_per_s'] / results['plain']['samples_per_s']:.2f} (peft / plain loop)")
    if "unsloth" in results:
        print(f"speedup: {results['unsloth']['samples_per_s'] / results['peft']['samples_per_s']:.2f} (unsloth / peft)")
    else:
        print("unsloth: not available here (it needs CUDA); only the peft backend was measured")
    return 0
