"""Training, shared by both papers: supervised fine-tuning (``sft``) and DPO (``dpo``) with LoRA, on
chat-format example sets (``data``)."""
