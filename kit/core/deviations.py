"""Where the kit knowingly does not do what the authors' released code does, and why.

Each entry names the paper, the file of the authors' code, what that code does, what the kit does instead
and which tables it affects. The report (``results/ASSUMPTIONS.md``) lists them beside the profiles'
assumptions, so a reader can tell a reproduction choice from a paper setting.
"""

from __future__ import annotations

from dataclasses import dataclass

CAS_SEAT_CODE = "github.com/HelloZicky/Cas-SEAT @ 6d80fb4"


@dataclass(frozen=True)
class Deviation:
    id: str
    paper: str  # SEAT | EACO
    source: str  # the authors' file (and function) that does it
    authors: str  # what the released code does
    kit: str  # what the kit does instead, and why
    affects: tuple[str, ...]


DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        id="seat-teacher-128-tokens",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, train/generate_data.py, main(): model.generate(**inputs, max_new_tokens=128)",
        authors="The Qwen2-VL teacher's SEAT answers are cut at 128 new tokens (the --max_new_tokens flag, "
        "default 512, is not used), so long reasoning loses its self-evaluation blocks and final answer.",
        kit="The budget is the profile's synthesis.max_new_tokens (tiny 256, paper 1024); an output that "
        "still runs out has no final answer and is flagged malformed by kit.eval.seat_format.parse, then removed by "
        "selection and counted.",
        affects=("casseat_synthesis", "casseat_selection", "casseat_main"),
    ),
    Deviation(
        id="cas-seat-reflection-label-leak",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, self-evaluate/evaluation/reflection.py, main(): "
        "`if item['true_false'] == True: new_items.append(item); continue`",
        authors="The reflection turn runs only on items already scored wrong against the gold answer, so "
        "reflection never sees a correct chain of thought and evaluation uses the labels.",
        kit="Synthesis and the cas_seat inference strategy run the reflection turn on every item. The "
        "authors' behaviour is kept only as the separately labelled cas_seat_oracle strategy, never in a "
        "main table.",
        affects=("casseat_synthesis", "casseat_main"),
    ),
    Deviation(
        id="cas-seat-first-43-skipped",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, self-evaluate/evaluation/reflection.py, main(): `if cnt < 44: continue`",
        authors="The first 43 items of the input file are skipped (and dropped from the output).",
        kit="Every item is processed.",
        affects=("casseat_synthesis", "casseat_main"),
    ),
    Deviation(
        id="seat-sampling-defaults",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, train/generate_data.py, main(): generate() without sampling arguments",
        authors="The teacher decodes with the checkpoint's generation_config (Qwen2-VL-7B-Instruct: top_k 1, "
        "near-greedy); the --temperature 0.2 flag is parsed but not passed.",
        kit="Decoding is explicit in the profile (synthesis.temperature, default 0: greedy, the effective "
        "behaviour of the authors' run), with synthesis.samples > 1 allowed at temperature > 0. Every "
        "backend keeps the checkpoint's repetition_penalty (1.05; kit.llm.generate.decoding_settings), so greedy "
        "picks the tokens the authors' top_k 1 picked; sampling uses the profile's top_p with top-k off.",
        affects=("casseat_synthesis",),
    ),
    Deviation(
        id="seat-question-stripped",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, train/generate_data.py, main() lines 283-287: "
        "`query = query.replace(\"<image>\", \"\")`, `answer = problem['conversations'][1][\"value\"]`",
        authors="The MathV360K question keeps whatever surrounds the removed <image> tag (a row opening "
        "'<image>\\n' puts 'question: \\n \\n<question>' into the prompt), and the answer is used as it is.",
        kit="kit.casseat.mathv360k.load_source .strip()s the question and the answer before kit.llm.prompts formats them, "
        "so the prompt differs from the authors' in whitespace only; the prompt text itself is the authors' "
        "byte for byte (tests/test_prompts.py).",
        affects=("casseat_synthesis",),
    ),
    Deviation(
        id="casseat-gains-baseline",
        paper="SEAT",
        source="arXiv 2501.05662 v1, abstract: \"compared to existing methods, Cas-SEAT significantly enhances "
        "[...], improving performance by 19.68%, 55.57%, and 46.79% on the MathVista, Math-V, and We-Math "
        "datasets, respectively\"; the released code has no table script",
        authors="The paper's gains are relative to \"existing methods\", which the abstract does not name (nor "
        "which We-Math score its figure is for).",
        kit="kit.casseat.tables.main_table measures gains over the untrained student (`base`) and sets the paper's "
        "figures beside them; the table's notes and the report say that the paper's baseline is existing "
        "methods, so the two are not read as the same quantity.",
        affects=("casseat_main", "casseat_main_seeds"),
    ),
)


def get(deviation_id: str) -> Deviation:
    from kit.errors import KitError

    for deviation in DEVIATIONS:
        if deviation.id == deviation_id:
            return deviation
    raise KitError(f"unknown deviation {deviation_id!r}; known: {', '.join(d.id for d in DEVIATIONS)}")


# -- EACO (arXiv 2412.04903) -------------------------------------------------------------------------
EACO_CODE = "github.com/yongxinwang-ai/EACO_draft @ dfac188"
STIC_CODE = "github.com/yihedeng9/STIC @ 626484428be2"

DEVIATIONS = DEVIATIONS + (
    Deviation(
        id="eaco-generator-judges-itself",
        paper="EACO",
        source=f"{EACO_CODE}, EACO/generate_pref_by_critic.py, __main__: one load_pretrained_model(args.model_path) "
        "(lines 167-170) serves both `output = eval_model(args)` (line 253) and `judgement = eval_model(args)` "
        "(line 258); scripts/generate_pref_by_critic.sh @ a310d68 passes --critic-path, which the parser "
        "(lines 150-163) does not define",
        authors="The policy scores its own responses: no Critic is ever loaded (the shell script's --critic-path "
        "would stop argparse with 'unrecognized arguments'; as released the loop cannot start either, since "
        "`for i in tqdm(len(coco))` at line 243 iterates over an int).",
        kit="kit.eaco.critic.score_responses runs whichever engine it is given; the EACO stage passes the trained "
        "Critic's engine, separate from the policy's (kit.eaco.preference.sample_responses).",
        affects=("eaco_critic", "eaco_main"),
    ),
    Deviation(
        id="eaco-score-first-integer",
        paper="EACO",
        source=f"{EACO_CODE}, EACO/generate_pref_by_critic.py, get_score() (lines 36-42): "
        "`re.search(r'(\\d+)', response)`, else `return 0`",
        authors="The score is the first integer anywhere in the judgement (a judgement opening 'Add 1 point "
        "for relevance ...' scores 1 whatever its total), and a judgement without digits scores 0, which "
        "makes an unreadable judgement the likeliest rejected response.",
        kit="kit.eaco.critic.parse_score reads the last 'score: <int>' (case-insensitive), the format the rubric "
        "asks for; a judgement without one, or with a total outside 0-5, is flagged unparseable, counted, "
        "and its response takes no part in choosing a pair.",
        affects=("eaco_critic", "eaco_main"),
    ),
    Deviation(
        id="eaco-preference-record-overwritten",
        paper="EACO",
        source=f"{EACO_CODE}, EACO/generate_pref_by_critic.py, __main__: `d = {{... 'chosen' ..., 'rejected' "
        "...}` (lines 270-274) is replaced by `d = {'image', 'prompt', 'output_list'}` (lines 276-278) "
        "before `f.write(json.dumps(d))` (lines 281-283)",
        authors="The chosen/rejected pair and the score list are computed and then discarded: the file written "
        "holds only the five responses of each image.",
        kit="kit.eaco.preference.build_pairs writes the pair together with every score and the chosen and "
        "rejected indices, atomically, after kit.training.data.validate_pairs.",
        affects=("eaco_main",),
    ),
    Deviation(
        id="eaco-critic-sees-no-question",
        paper="EACO",
        source=f"{EACO_CODE}, EACO/generate_pref_by_critic.py, __main__ line 256: "
        "`args.query = Judge_prompt + f\"{output}\" + Rating_prompt`",
        authors="The Critic is asked to review 'the user\u2019s question and the corresponding response' but "
        "is shown only the image and the response.",
        kit="The default critic prompt (kit.llm.prompts eaco_critic_additive) keeps the rubric word for word and "
        "adds the question and the response on their own lines; the draft's exact text stays available "
        "as eaco_critic_draft.",
        affects=("eaco_critic", "eaco_main"),
    ),
    Deviation(
        id="eaco-average-basis",
        paper="EACO",
        source="arXiv 2412.04903 v2, abstract (\"an 8.5% improvement over LLaVA-v1.6-Mistral-7B across multiple "
        "benchmarks\") and its Figure 1 radar chart; the draft code has no evaluation script",
        authors="The paper does not say which benchmarks and which metric of each its average is taken over; "
        "the radar chart it most likely summarises has one axis per benchmark (8 axes).",
        kit="kit.eaco.tables.main_table's `average gain %` is the mean of one headline gain per benchmark measured "
        "(kit.eval.evaluate.HEADLINE_METRIC: HallusionBench aAcc, MME perception, MathVista, POPE F1, SEED-Bench "
        "image, ScienceQA-IMG, AMBER score; the LLaVA tables' MME and POPE figures), not of every column, "
        "which would count HallusionBench and AMBER three times. The report names the columns it averages.",
        affects=("eaco_main",),
    ),
    Deviation(
        id="eaco-critic-sampled",
        paper="EACO",
        source=f"{EACO_CODE}, EACO/generate_pref_by_critic.py, __main__: the judgement (line 258) reuses the "
        "policy's args, --temperature 0.2 (line 159)",
        authors="Each judgement is sampled at temperature 0.2, so scoring the same response twice can give "
        "two scores.",
        kit="kit.eaco.critic.score_responses decodes greedily unless given other Sampling settings, so that a "
        "score is a function of the response; pass Sampling(temperature=0.2) to match the draft.",
        affects=("eaco_main",),
    ),
    Deviation(
        id="eaco-equal-scores-paired",
        paper="EACO",
        source=f"{EACO_CODE}, EACO/generate_pref_by_critic.py, __main__ lines 261-265: "
        "`max_index = score_list.index(max(score_list))`, `min_index = score_list.index(min(score_list))`, "
        "`if max_index == min_index: max_index = (max_index + 1) % 5`",
        authors="The two first indices coincide only when all five scores are equal; the draft then still "
        "makes a pair, response 1 chosen over response 0, although the Critic preferred neither.",
        kit="kit.eaco.preference.choose_pair keeps the draft's rule (first highest score chosen, first lowest "
        "rejected) over the parseable scores and makes no pair when they are all equal or fewer than two "
        "parse; kit.eaco.preference.draft_choose_pair is the draft's rule verbatim, for comparison.",
        affects=("eaco_main",),
    ),
    Deviation(
        id="stic-corruption-not-applied",
        paper="EACO",
        source=f"{STIC_CODE}, stic/generate_pref.py, __main__ lines 219-222 (EACO/generate_pref.py lines "
        "220-223): `image_corruption = True; corrupted_output = eval_model(args)`",
        authors="The corrupted-image branch sets the flag but does not pass it, so eval_model loads the "
        "clean image (load_image's Resize(20) / ColorJitter, lines 48-53, never runs) and the rejected "
        "answer is an ordinary description.",
        kit="kit.eaco.preference.stic_pairs corrupts the image as load_image intends (torchvision's "
        "T.Resize(size=20) or ColorJitter(brightness=.5, hue=.3), one of the two at even odds) and records "
        "which.",
        affects=("eaco_main",),
    ),
    Deviation(
        id="eaco-dpo-projector-lr",
        paper="EACO",
        source=f"{EACO_CODE}, scripts/dpo_finetune.sh: `--lora_enable True --lora_r 128 --lora_alpha 256 "
        "--mm_projector_lr 2e-5` with DeepSpeed ZeRO-2 on 4 GPUs",
        authors="LLaVA's LoRA training also trains the multimodal projector in full, at its own learning "
        "rate 2e-5, beside the LoRA adapter at 1e-7; the global batch of 8 is 4 GPUs x 1 x 2 accumulation.",
        kit="kit.training.dpo trains the LoRA adapter only (the projector and vision tower stay frozen unless "
        "finetune_vision_layers) with TRL's DPOTrainer, and reaches the global batch of 8 as 1 x 8 "
        "accumulation on one device, so the adapter alone carries the preference update.",
        affects=("eaco_main",),
    ),
    Deviation(
        id="eaco-dpo-no-truncation",
        paper="EACO",
        source=f"{EACO_CODE}, llava/train/train_dpo.py: TrainingArguments.model_max_length default 1048 (lines "
        "118-119; scripts/dpo_finetune.sh does not set it), copied to model.config.tokenizer_model_max_length "
        "(line 940) and applied after the image's 576 features are spliced in (llava/model/llava_arch.py lines "
        "274-277)",
        authors="Each chosen and rejected sequence is cut to 1048 positions counting the image (one 336 x 336 "
        "crop, --image_aspect_ratio pad: 576 features), so the system prompt, question and answer share about "
        "470 text positions and an answer longer than about 400 tokens loses its tail; the image is never cut.",
        kit="kit.training.dpo keeps max_length=None: whole answers. The kit's LLaVA-NeXT processor expands an image into "
        "its anyres tiles (2,340 tokens for a 640 x 480 COCO image: 576 + 36 rows x 49), and TRL's max_length "
        "keeps the first positions of the whole sequence, image tokens included, so 1048 would cut into the "
        "image and stop the run; no single length maps the draft's text budget onto these sequences.",
        affects=("eaco_main",),
    ),
    Deviation(
        id="eaco-sampling-top-k",
        paper="EACO",
        source=f"{EACO_CODE}, EACO/generate_pref_by_critic.py, eval_model(): model.generate(do_sample=True if "
        "args.temperature > 0 else False, temperature=args.temperature, top_p=args.top_p, ...) with no top_k "
        "(lines 131-142)",
        authors="The five answers per image are sampled at temperature 0.2 with transformers' default top_k 50 "
        "(no top_k is passed) and top_p None.",
        kit="kit.llm.generate samples with top-k off (top_k 0 for transformers, -1 for vLLM and OpenAI-compatible "
        "servers, which refuse 0) on every backend, so all three draw from the same distribution; at "
        "temperature 0.2 the tokens outside the 50 most likely carry almost no probability.",
        affects=("eaco_main",),
    ),
)
