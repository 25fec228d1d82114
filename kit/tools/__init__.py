"""Developer tools: speed benchmarks (``kit bench``) and the prepared GPU check (``kit check --gpu``)."""
