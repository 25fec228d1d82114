"""The one loader for hub ids and local folders.

``load(name_or_path)`` is the only way the kit opens a model, for ``Qwen/Qwen2-VL-7B-Instruct`` on a
GPU and for ``data/models/tiny-qwen2vl-teacher`` on a laptop alike, so the tiny profile exercises the
same code as the paper profile (the tiny models themselves are built by ``kit.tiny.models``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.paths import looks_like_hub_id
from kit.errors import KitError

QWEN2VL = "qwen2_vl"
LLAVA = "llava"
FAMILIES = (QWEN2VL, LLAVA)

# ---------------------------------------------------------------------------------------------
# Qwen2-VL's processor without a video slot: constructing its video processor needs torchvision,
# which must be absent on CPU machines (see kit/core/envcheck.py). Images go through unchanged.
# ---------------------------------------------------------------------------------------------
def qwen2vl_processor_without_video():
    from transformers import Qwen2VLProcessor

    class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
        """``Qwen2VLProcessor`` whose ``video_processor`` is always ``None`` (no torchvision needed)."""

        # ProcessorMixin derives the processor's parts from this signature: no video_processor here.
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return Qwen2VLImageOnlyProcessor


def _pil_image_processor(source: str, **kwargs: Any):
    """The checkpoint's image processor in its PIL implementation, chosen without ``AutoImageProcessor``: up to
    transformers 5.19 (the newest Unsloth accepts is 5.17) ``AutoImageProcessor`` is itself a placeholder that
    raises without torchvision, even for processors that have a PIL implementation."""
    import transformers
    from transformers.image_processing_utils import ImageProcessingMixin

    config, _ = ImageProcessingMixin.get_image_processor_dict(source, **kwargs)
    kind = str(config.get("image_processor_type") or "")
    base = kind.removesuffix("Fast").removesuffix("Pil")
    for name in (f"{base}Pil", base):
        cls = getattr(transformers, name, None) if base else None
        if cls is not None and not getattr(cls, "_backends", None):
            return cls.from_pretrained(source, **kwargs)
    raise KitError(f"{source}: its image processor {kind or '(unnamed)'} has no implementation without torchvision "
                   "in this transformers; on a CPU machine torchvision must stay absent (kit check), so this "
                   "checkpoint can only be used where CUDA and torchvision are installed")


def _torchvision_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model with its processor and where it came from."""

    model: Any
    processor: Any
    source: str
    family: str
    adapter: str | None = None

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def is_local(name_or_path: str | Path) -> bool:
    return Path(name_or_path).expanduser().exists()


def _resolve(name_or_path: str | Path) -> str:
    """Local folders become absolute paths; anything else must look like a hub id."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise KitError(f"model path {path} is a file; expected a folder saved with save_pretrained")
        return str(path.resolve())
    text = str(name_or_path)
    if not looks_like_hub_id(text):
        raise KitError(f"model {text!r} is neither an existing folder nor a hub id like 'Qwen/Qwen2-VL-7B-Instruct'")
    return text


def _revision(source: str) -> dict[str, str]:
    """``revision=`` for a hub id the profile pins (``revisions:``), so weights, config and processor are
    the version the stage keys name; nothing for a local folder or an unpinned id."""
    from kit.core.artifacts import pinned_revision

    revision = None if is_local(source) else pinned_revision(source)
    return {"revision": revision} if revision else {}


def _read_config(source: str, trust_remote_code: bool) -> dict:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **_revision(source)).to_dict()
    except OSError as err:
        raise KitError(f"cannot read the model config of {source!r}: {err}") from err


def family_of(config: dict) -> str:
    model_type = config.get("model_type", "")
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        return QWEN2VL
    if model_type in ("llava", "llava_next"):
        return LLAVA
    return model_type


def load_processor(source: str, family: str, trust_remote_code: bool = False):
    from transformers import AutoProcessor

    if _torchvision_available():
        from transformers import ProcessorMixin, Qwen2VLProcessor

        saved, _ = ProcessorMixin.get_processor_dict(source, **_revision(source))
        if saved.get("processor_class") == "Qwen2VLImageOnlyProcessor":
            # The tiny Qwen2-VL folders name the kit's class, which AutoProcessor does not know; with torchvision
            # the real processor (video slot included) opens them. Not run on this project's CPU machines.
            return Qwen2VLProcessor.from_pretrained(source, trust_remote_code=trust_remote_code, **_revision(source))
        return AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code, **_revision(source))
    return _processor_without_torchvision(source, family, trust_remote_code=trust_remote_code, **_revision(source))


def _processor_without_torchvision(source: str, family: str, **kwargs: Any):
    """The checkpoint's processor put together from its parts, the image processor in its PIL implementation:
    ``AutoProcessor`` would ask ``AutoImageProcessor``, which needs torchvision up to transformers 5.19, and
    Qwen2-VL's processor would build a video processor, which always does."""
    import inspect

    import transformers
    from transformers import AutoTokenizer, ProcessorMixin

    config, _ = ProcessorMixin.get_processor_dict(source, **kwargs)
    cls = (qwen2vl_processor_without_video() if family == QWEN2VL
           else getattr(transformers, str(config.get("processor_class") or ""), None))
    if cls is None:
        raise KitError(f"{source}: processor class {config.get('processor_class')!r} is not in this transformers")
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    template_file = Path(source) / "chat_template.jinja"
    template = (template_file.read_text() if template_file.is_file()
                else config.get("chat_template") or getattr(tokenizer, "chat_template", None))
    accepted = inspect.signature(cls.__init__).parameters
    options = {key: value for key, value in config.items()
               if key in accepted and key not in ("image_processor", "tokenizer", "video_processor", "chat_template")}
    return cls(image_processor=_pil_image_processor(source, **kwargs), tokenizer=tokenizer, chat_template=template,
               **options)


# 16-bit types a checkpoint may declare; it is loaded in that type on a GPU.
HALF_DTYPES = ("bfloat16", "float16")


def default_dtype(config: Mapping[str, Any], cuda: bool | None = None) -> str:
    """The type ``load`` gives the weights when its caller names none: float32 on the CPU (half-precision
    matmuls there are slow or missing, and the tiny models' numbers were made in float32); on a GPU the
    checkpoint's own ``dtype``/``torch_dtype`` when it is a 16-bit type (LLaVA-NeXT ships float16), else
    bfloat16. A 7B model in float32 would need twice the memory and run at about half the speed the
    paper profile's estimates assume. ``cuda``: whether the weights go to a GPU (default: whether one is
    available)."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        return "float32"
    for key in ("dtype", "torch_dtype"):
        name = str(config.get(key) or "").removeprefix("torch.")
        if name in HALF_DTYPES:
            return name
    return "bfloat16"


def _sources(name_or_path: str | Path, adapter: str | Path | None,
             trust_remote_code: bool) -> tuple[str, str | Path | None, dict, str, str]:
    """(base model, adapter, base config, family, where the processor is) for ``load``'s arguments: a folder
    holding a PEFT adapter stands for its base plus itself, and an adapter saved with its processor brings it."""
    source = _resolve(name_or_path)
    if adapter is None and is_local(source) and (Path(source) / "adapter_config.json").is_file():
        adapter = source
        source = _resolve(json.loads((Path(source) / "adapter_config.json").read_text())["base_model_name_or_path"])
    config = _read_config(source, trust_remote_code)
    processor_source = str(adapter) if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else source
    return source, adapter, config, family_of(config), processor_source


def open_processor(name_or_path: str | Path, *, adapter: str | Path | None = None, trust_remote_code: bool = False):
    """The processor ``load`` would give, without loading any weights."""
    _, _, _, family, processor_source = _sources(name_or_path, adapter, trust_remote_code)
    return load_processor(processor_source, family, trust_remote_code)


def load(
    name_or_path: str | Path,
    *,
    adapter: str | Path | None = None,
    dtype: str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    trainable: bool = False,
) -> LoadedModel:
    """Open a vision-language model and its processor from a hub id or a local folder.

    A folder holding a PEFT adapter (``adapter_config.json``) is opened on top of its base model;
    ``adapter=`` does the same for an explicit adapter folder, with its weights trainable when
    ``trainable`` (to continue training it). Weights load from safetensors only. ``dtype`` (a torch type
    name): ``default_dtype``'s choice when left out, so every caller gets 16-bit weights on a GPU.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    source, adapter, config, family, processor_source = _sources(name_or_path, adapter, trust_remote_code)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # The device the weights go to decides, not the machine: ``device="cpu"`` on a GPU machine stays float32.
    torch_dtype = getattr(torch, dtype or default_dtype(config, cuda=str(device).startswith("cuda")))
    model = AutoModelForImageTextToText.from_pretrained(
        source, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code, **_revision(source)
    )
    processor = load_processor(processor_source, family, trust_remote_code)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    model.to(device)
    if not trainable:
        model.eval()
    return LoadedModel(model=model, processor=processor, source=source, family=family,
                       adapter=str(adapter) if adapter else None)


def load_model(model: Any) -> Any:
    """``model`` itself when it is a ``LoadedModel``, else ``kit.llm.models.load(model)``."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str | Path):
        return load(model)
    raise KitError(f"model must be a LoadedModel, a local folder or a hub id, not {type(model).__name__}")


def model_label(loaded: Any) -> str:
    """The model's identity as written to prediction files: its source, plus the adapter if any."""
    return f"{loaded.source}+{loaded.adapter}" if loaded.adapter else str(loaded.source)


def save(model, processor, folder: str | Path, manifest: dict | None = None) -> Path:
    """``save_pretrained`` the model (safetensors) and processor into ``folder`` atomically."""
    from kit.core.artifacts import atomic_dir

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if manifest is not None:
            (Path(tmp) / "kit_model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
