"""``kit check --gpu`` (kit/tools/gpucheck.py): the whole pipeline (build, SFT on both backends, the mask, dtype and
speed probes, the DPO step, the plain-PEFT reloads, the report) runs here on CPU with tiny shapes of the same
architectures; the real shapes are checked against the hub's parameter and image-token counts without building
them. The ``gpu``-marked tests run the same check on CUDA and skip without it."""

from __future__ import annotations

import re

import pytest
import torch
from test_real_templates import cot, reflection, with_real_template

from kit import REPO_DIR, cli
from kit.llm import models
from kit.tools.gpucheck import (
    BEGIN,
    END,
    REAL_SHAPES,
    SHAPES,
    TINY_SHAPES,
    Plan,
    _peft_refusal,
    check_labels,
    failures,
    probing,
    run_check,
    shape_config,
    shape_processor,
)
from kit.training.data import to_hf_dataset
from kit.training.sft import TurnMaskingCollator

pytestmark = pytest.mark.skipif(not (REPO_DIR / "data" / "models" / "tiny-qwen2vl-student").is_dir(),
                                reason="the shipped tiny models are needed")
TINY = tuple(shape.key for shape in TINY_SHAPES)
UNSLOTH_ABSENT = ("unsloth not installed", "unsloth needs CUDA; this run is on the CPU")
# Under Unsloth's pins (transformers 5.17: make test-unsloth-pins) kit.training.sft refuses backend peft, and the check
# says so in those rows instead of measuring them.
PEFT_REFUSED = _peft_refusal()
needs_peft = pytest.mark.skipif(PEFT_REFUSED is not None, reason="kit.training.sft refuses backend peft in this environment")


def _tiny_plan(device: str) -> Plan:
    return Plan(shapes=TINY, device=device, dpo_shape="tiny-llava-next", threads=1, budget_s=300,
                command="python -m pytest tests/test_gpucheck.py")


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory) -> tuple[dict, str]:
    folder = tmp_path_factory.mktemp("gpucheck")
    doc = folder / "gpu-validation.md"
    doc.write_text(f"# A page\n\ntext before\n\n{BEGIN}\nold figures\n{END}\n\ntext after\n")
    results = run_check(doc, _tiny_plan("cpu"), workdir=folder, log=lambda message: None)
    return results, doc.read_text()


def _table(text: str, heading: str) -> list[list[str]]:
    """The body rows of the Markdown table under ``heading`` (escaped pipes kept inside their cells)."""
    block = text.split(heading, 1)[1].split("\n\n", 2)[1]
    rows = [re.split(r"(?<!\\)\|", line.strip())[1:-1] for line in block.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def test_the_whole_check_runs_on_tiny_shapes_and_every_check_passes(tiny_check):
    results, text = tiny_check
    assert failures(results) == []
    for key in TINY:
        assert results["models"][key]["template_ok"]
        assert results["sft"][f"{key}/unsloth"]["status"] in UNSLOTH_ABSENT  # said, never measured
        if PEFT_REFUSED:
            assert results["sft"][f"{key}/peft"]["status"].startswith("not run: kit.training.sft refuses backend peft")
            continue
        assert results["sft"][f"{key}/peft"]["status"] == "ok"
        reloads = results["reload"][key]["adapters"]
        assert all(row["status"] == "ok" and row["tensors_loaded_unchanged"] == row["tensors_saved"] > 0
                   for row in reloads.values())
        assert all(row["logits_max_diff"] == 0.0 and row["lora_b_nonzero"] for row in reloads.values())
    dpo_reload = results["reload"]["tiny-llava-next"]["adapters"]["dpo"]
    assert dpo_reload["status"] == "ok" and dpo_reload["logits_max_diff"] == 0.0
    assert set(results["reload"]["tiny-llava-next"]["adapters"]) == ({"dpo"} if PEFT_REFUSED else {"peft", "dpo"})
    assert (PEFT_REFUSED in results["limits"] and "### Not measured in this environment" in text) \
        if PEFT_REFUSED else not results["limits"]
    assert results["dpo"]["tiny-llava-next"]["status"] == "ok" and results["dpo"]["tiny-llava-next"]["steps"] == 1
    assert results["models"]["tiny-llava-next"]["added_tokens"] == ["</s>"]  # Mistral's end of turn


@needs_peft
def test_every_figure_in_the_report_comes_from_the_run(tiny_check):
    results, text = tiny_check
    rows = _table(text, "### SFT: peft and Unsloth")
    assert len(rows) == 2 * len(TINY)
    names = {SHAPES[key].name: key for key in TINY}
    for shape, _, backend, status, steps, samples, tokens, memory, masks, dtypes, losses in rows:
        row = results["sft"][f"{names[shape]}/{backend}"]
        if backend == "unsloth":
            assert status in UNSLOTH_ABSENT
            assert {steps, samples, tokens, memory, masks, dtypes, losses} == {"—"}  # nothing made up
            continue
        assert status == "ok"
        assert steps == f"{row['steps_per_s']:,.3f}" and row["steps_per_s"] > 0
        assert samples == f"{row['samples_per_s']:,.2f}" and tokens == f"{row['tokens_per_s']:,.0f}"
        assert memory == f"{row['peak_memory_mb'] / 1024:.2f} GiB" and row["peak_memory_mb"] > 0
        assert masks == "; ".join(", ".join(f"{r['labelled']}/{r['tokens']}" for r in b["rows"]) for b in row["batches"])
        assert dtypes == "float32 · float32 · float32"  # the CPU loads float32; CUDA must say bfloat16
        assert losses == " → ".join(f"{x:.3f}" for x in row["losses"])
    dpo = _table(text, "### One DPO step")
    assert dpo[0][:3] == ["tiny LLaVA-NeXT (test)", "ok", "1"]
    assert dpo[0][5] == f"{results['dpo']['tiny-llava-next']['train_loss']:,.4f}"
    reloads = _table(text, "### Adapters reloaded")
    assert [(r[1], r[2]) for r in reloads] == [("peft", "ok"), ("peft", "ok"), ("dpo", "ok")]
    assert "- **Device:** CPU, 1 thread(s)." in text
    assert "- **Command:** `python -m pytest tests/test_gpucheck.py`" in text
    assert "none: every row that ran passed its checks" in text
    assert not re.search(r"TBD|TODO|estimat|\?\?", text)


@needs_peft
def test_the_masks_of_every_batch_were_checked(tiny_check):
    results, _ = tiny_check
    plan = results["plan"]
    for key in TINY:
        row = results["sft"][f"{key}/peft"]
        assert len(row["batches"]) == plan["warmup_steps"] + plan["measured_steps"]
        checked = [r for batch in row["batches"] for r in batch["rows"]]
        assert len(checked) == len(row["batches"]) * plan["batch_size"]
        assert all(r["ok"] and 0 < r["labelled"] < r["tokens"] for r in checked)
        labelled = {r["id"]: r["labelled"] for r in checked}
        # reflection-1 trains its reflection only, reflection-3 its CoT turn too (train_turns [1] and [0, 1])
        assert labelled["reflection-1"] < labelled["reflection-3"]
        assert {r["spans"] for r in checked if r["id"] == "reflection-3"} == {2}
        assert len(row["losses"]) == row["steps"] == 4 and row["measured_steps"] == 3


def test_rewriting_keeps_the_page_around_the_measured_section(tiny_check):
    _, text = tiny_check
    assert text.startswith("# A page\n\ntext before\n\n")
    assert text.rstrip().endswith("text after")
    assert text.count(BEGIN) == text.count(END) == 1 and "old figures" not in text
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert "## Measured" in section and "### Problems found" in section


def test_the_committed_page_can_be_rewritten_and_claims_no_unmeasured_figure():
    text = (REPO_DIR / "docs" / "gpu-validation.md").read_text()
    assert text.count(BEGIN) == text.count(END) == 1
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    if "- **Device:**" not in section:  # nothing measured yet: it says so, with a date, and gives no number
        assert re.search(r"\d{4}-\d{2}-\d{2}: no GPU was available to this project's sessions; no figure has been "
                         r"measured yet\.", section)
        assert not re.search(r"steps/s|GiB|\d+\.\d+", section)


def test_the_real_shapes_are_the_hub_models_with_their_image_token_counts():
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    # The hub's model sizes (Qwen2-VL-2B-Instruct 2.21 B, llava-v1.6-mistral-7b-hf 7.57 B, Qwen2-VL-7B 8.29 B),
    # counted on the meta device, and the image tokens the real processors make of a 640 x 480 image.
    expected = {"qwen2vl-2b": (2_208_985_600, 391, []), "llava-next-7b": (7_566_747_648, 2340, ["</s>"]),
                "qwen2vl-7b": (8_291_375_616, 391, [])}
    image = Image.new("RGB", (640, 480), (30, 160, 30))
    for shape in REAL_SHAPES:
        processor, added = shape_processor(shape)
        config = shape_config(shape, processor.tokenizer)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
        text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                           {"type": "text", "text": "hi"}]}],
                                             tokenize=False)
        ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"]
        image_id = config.image_token_id
        parameters, image_tokens, tokens_added = expected[shape.key]
        assert sum(p.numel() for p in model.parameters()) == parameters, shape.key
        assert int((ids == image_id).sum()) == image_tokens, shape.key
        assert added == tokens_added and int(ids.max()) < config.get_text_config().vocab_size


@needs_peft  # its batches come from the peft backend's collator, whose masks need what kit.training.sft checks
def test_the_mask_check_catches_labels_on_the_wrong_tokens(tmp_path):
    from fakes import row, write_source

    image = str(write_source(tmp_path / "src", [row("a", "a.png", "q", "1")], {"a.png": (200, 30, 30)}) / "a.png")
    for family in ("qwen2_vl", "llava_next"):
        processor = models.load(with_real_template(family, tmp_path / family)).processor
        examples = [cot(3, image), reflection(4, image)]  # the reflection example trains turn 1 only
        batch = TurnMaskingCollator(processor)(list(to_hf_dataset(examples)))

        def check(labels, rows=examples, processor=processor, batch=batch):
            return check_labels(processor.tokenizer, batch["input_ids"], labels, batch["attention_mask"], rows)

        assert all(r["ok"] for r in check(batch["labels"])), family
        prompt = batch["labels"].clone()
        first = int(batch["attention_mask"][0].nonzero()[0])
        prompt[0, first] = batch["input_ids"][0, first]  # one prompt token labelled
        assert [r["ok"] for r in check(prompt)] == [False, True]
        empty = batch["labels"].clone()
        empty[1] = -100
        assert check(empty)[1]["problem"] == "no labelled token"
        both_turns = [examples[0], {**examples[1], "train_turns": [0, 1]}]  # the wrong CoT turn should be there
        assert not check(batch["labels"], both_turns)[1]["ok"]


def test_probing_leaves_transformers_and_the_collators_as_they_were():
    import transformers.trainer as hf_trainer

    from kit.training import sft as train

    callbacks = list(hf_trainer.DEFAULT_CALLBACKS)
    calls = (train.TurnMaskingCollator.__call__, train.UnslothTurnCollator.__call__)
    with probing("cpu", None):
        assert len(hf_trainer.DEFAULT_CALLBACKS) == len(callbacks) + 1
        assert train.TurnMaskingCollator.__call__ is not calls[0]
    assert callbacks == hf_trainer.DEFAULT_CALLBACKS
    assert (train.TurnMaskingCollator.__call__, train.UnslothTurnCollator.__call__) == calls


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_kit_check_gpu_without_cuda_stops_and_writes_nothing(tmp_path, capsys):
    output = tmp_path / "gpu-validation.md"
    assert cli.main(["check", "--gpu", "--gpu-output", str(output)]) == 2
    assert not output.exists()
    assert "--gpu needs a CUDA GPU and this machine has none; nothing was measured or written" in capsys.readouterr().err


def test_a_process_stopped_at_its_limit_leaves_a_note_and_its_rows_no_figure(tmp_path):
    import time

    from kit.tools import gpucheck

    plan = Plan(shapes=("tiny-qwen2vl",), backends=("peft",), device="cpu", dpo_shape=None, command="stopped")
    past = time.time() - 60  # the process gets 1 s: it is stopped while still importing
    spec = {"plan": gpucheck.asdict(plan), "workdir": str(tmp_path), "rows": {}, "pairs": {},
            "deadlines": dict.fromkeys(gpucheck.STAGE_SHARES, past)}
    found = gpucheck._run_worker("peft", spec, tmp_path, log=lambda message: None)
    assert found["exit"].startswith("stopped at the time limit")
    results = {"plan": gpucheck.asdict(plan), "started": "2026-12-06T10:00:00+00:00", "versions": {}, "python": "x",
               "models": {}, "sft": {}, "dpo": {}, "reload": {}, "notes": [], "data": {"rows": 4, "images": {}}}
    gpucheck._merge(results, found, "peft")
    text = gpucheck.render(results)
    assert "| tiny Qwen2-VL (test) | — | peft | not run: its model was not built | — | — |" in text
    assert "- note: the peft process stopped at the time limit" in text
    assert failures(results)


def test_a_plan_naming_an_unknown_shape_is_refused():
    from kit.errors import KitError

    with pytest.raises(KitError, match="unknown shape"):
        Plan(shapes=("qwen2vl-3b",))


# ------------------------------------------------------------------------------------------ on a GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_tiny_shapes_on_cuda_train_in_bf16_on_both_backends(tmp_path):  # pragma: no cover - GPU only
    results = run_check(None, _tiny_plan("cuda"), workdir=tmp_path, log=lambda message: None)
    assert failures(results) == [], failures(results)
    measured = [row for key in TINY for backend in ("peft", "unsloth")
                if (row := results["sft"][f"{key}/{backend}"])["status"] == "ok"]
    assert measured  # peft or Unsloth: whichever this environment lets kit.training.sft run
    for row in measured:
        assert row["dtypes"]["frozen"] == ["bfloat16"] and row["dtypes"]["compute"] == "bfloat16"
        assert row["bf16_autocast"] and row["steps_per_s"] > 0 and row["peak_memory_mb"] > 0


@pytest.mark.gpu
@needs_cuda
def test_the_real_shapes_on_one_gpu(tmp_path):  # pragma: no cover - GPU only, about 8 minutes
    output = tmp_path / "gpu-validation.md"
    results = run_check(output, Plan(command="python -m pytest -m gpu tests/test_gpucheck.py"), workdir=tmp_path)
    assert failures(results) == [], failures(results)
    assert results["seconds"] < 8 * 60
    text = output.read_text()
    assert "- **Device:** NVIDIA" in text and "time budget" not in text
    for shape in REAL_SHAPES:
        ran = [row for backend in ("peft", "unsloth") if (row := results["sft"][f"{shape.key}/{backend}"])["status"] == "ok"]
        assert ran and all(row["dtypes"]["compute"] == "bfloat16" for row in ran), shape.key
        assert all(row["status"] == "ok" for row in results["reload"][shape.key]["adapters"].values())
    assert results["dpo"]["llava-next-7b"]["status"] == "ok"
