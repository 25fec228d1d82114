"""Running models, whatever the paper: loading (local folders or hub ids, adapters), the generation engines
(in process or OpenAI-compatible servers such as vLLM), ``kit serve``, LLM judges and every prompt the pipeline sends."""
