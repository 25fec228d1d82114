"""Benchmarks and evaluation: one module per benchmark in ``benchmarks`` (loader, prompt, extraction, official
score, headline metrics), inference strategies, the SEAT output format, and the evaluation loop."""
