"""The tiny models of the real architectures: Qwen2-VL (the Cas-SEAT teacher and student) and LLaVA (the EACO
policy and Critic), built from config with random weights, a byte-level BPE tokenizer trained on the tiny
world's text and a ChatML chat template that renders image parts as the family's image token. They are saved
in the Hugging Face layout and opened by ``kit.llm.models.load`` like any checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from kit.errors import KitError
from kit.llm.models import FAMILIES, LLAVA, QWEN2VL, qwen2vl_processor_without_video

# Image part markers per family: Qwen2-VL wraps its pad token in vision start/end tokens, LLaVA uses one
# placeholder; each processor expands the placeholder to the number of image features.
IMAGE_MARKUP = {
    QWEN2VL: "<|vision_start|><|image_pad|><|vision_end|>",
    LLAVA: "<image>",
}
SPECIAL_TOKENS = {
    QWEN2VL: ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
              "<|video_pad|>"],
    LLAVA: ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"],
}

# ChatML as both real families use it; `{% generation %}` marks assistant tokens so that TRL can
# compute the loss on the assistant's tokens only (`assistant_only_loss=True`).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>' }}{% endgeneration %}"
    "{%- else -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '@@IMAGE@@' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>' }}"
    "{%- endif -%}"
    "{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def chat_template(family: str) -> str:
    return CHAT_TEMPLATE.replace("@@IMAGE@@", IMAGE_MARKUP[family])


@dataclass(frozen=True)
class TinySize:
    """Width and depth of a tiny model. About 0.6 M parameters at the defaults (2.4 MB on disk)."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 256
    vision_width: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    vocab: int = 640
    image_size: int = 112



def train_tokenizer(texts: list[str], family: str, vocab_size: int):
    """A byte-level BPE trained on ``texts`` (seconds), wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS[family]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",  # batched generation appends to the right end of every row
    )
    tokenizer.chat_template = chat_template(family)
    if family == LLAVA:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


# How M-RoPE's head_dim/2 rotary frequencies go to the time, height and width axes (`mrope_section`; chunk i
# goes to axis i % 3, fastest frequencies first). "qwen2vl": contiguous 1/4, 3/8, 3/8 as in Qwen2-VL, which
# leaves the width axis only the slowest frequencies (under 0.003 rad per column at head_dim 32);
# "interleaved": t, h, w, t, h, w, ... one frequency each, as Qwen3-VL's interleaved M-RoPE; "spatial": height
# and width alternate and time gets none (still images only). Text-only positions are plain 1D RoPE under
# all three (../shared/notes/tiny-world-design.md).
MROPE_LAYOUTS = ("qwen2vl", "interleaved", "spatial")


def mrope_section(layout: str, head_dim: int) -> list[int]:
    half = head_dim // 2
    if layout == "qwen2vl":
        return [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    if layout == "interleaved":
        return [1] * half
    if layout == "spatial" and half % 2 == 0:
        return [0, 1, 1] * (half // 2)
    raise KitError(f"mrope layout {layout!r} does not fit head_dim {head_dim}; choose one of {', '.join(MROPE_LAYOUTS)}"
                   " (spatial needs head_dim divisible by 4)")


def build_qwen2vl(tokenizer, size: TinySize = TinySize(), seed: int = 0, *, mrope: str = "qwen2vl",
                  vision_rope_theta: float = 10000.0):
    """A randomly initialised Qwen2-VL of the given size and its processor. ``mrope`` names the M-RoPE layout
    (``MROPE_LAYOUTS``); ``vision_rope_theta`` is the vision tower's 2D rotary base (Qwen2-VL: 10000)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    head_dim = size.hidden // size.heads
    mrope = mrope_section(mrope, head_dim)
    vocab = len(tokenizer)
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": size.hidden,
            "intermediate_size": size.ffn,
            "num_hidden_layers": size.layers,
            "num_attention_heads": size.heads,
            "num_key_value_heads": size.kv_heads,
            "max_position_embeddings": 2048,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": size.vision_depth,
            "embed_dim": size.vision_width,
            "hidden_size": size.hidden,
            "num_heads": size.vision_heads,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "rope_parameters": {"rope_type": "axial", "rope_theta": float(vision_rope_theta)},
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pixels = size.image_size * size.image_size
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels}, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = qwen2vl_processor_without_video()(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template(QWEN2VL)
    )
    return model, processor


def build_llava(tokenizer, size: TinySize = TinySize(), seed: int = 0):
    """A randomly initialised LLaVA (CLIP vision tower + Llama language model) and its processor.

    Patch 28 on 112 px images gives 16 image features, one per tiny-world grid cell, like the
    Qwen2-VL models after their 2x2 merge."""
    import torch
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    patch = 28
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": size.vision_width,
            "intermediate_size": size.vision_width * 2,
            "num_hidden_layers": size.vision_depth,
            "num_attention_heads": size.vision_heads,
            "image_size": size.image_size,
            "patch_size": patch,
            "projection_dim": size.vision_width,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": size.hidden,
            "intermediate_size": size.ffn,
            "num_hidden_layers": size.layers,
            "num_attention_heads": size.heads,
            "num_key_value_heads": size.kv_heads,
            "max_position_embeddings": 2048,
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": True,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(size.image_size // patch) ** 2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size.image_size},
        crop_size={"height": size.image_size, "width": size.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        chat_template=chat_template(LLAVA),
    )
    return model, processor


def build_tiny(family: str, tokenizer, size: TinySize = TinySize(), seed: int = 0, *, mrope: str = "qwen2vl",
               vision_rope_theta: float = 10000.0):
    """A fresh tiny model of ``family``; ``mrope`` and ``vision_rope_theta`` are Qwen2-VL's (``build_qwen2vl``)."""
    if family not in FAMILIES:
        raise KitError(f"unknown tiny model family {family!r}; choose one of {', '.join(FAMILIES)}")
    if family == QWEN2VL:
        return build_qwen2vl(tokenizer, size, seed, mrope=mrope, vision_rope_theta=vision_rope_theta)
    if (mrope, vision_rope_theta) != ("qwen2vl", 10000.0):
        raise KitError(f"mrope and vision_rope_theta are Qwen2-VL's rotary settings; {family} has none")
    return build_llava(tokenizer, size, seed)
