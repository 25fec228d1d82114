"""Shared machinery that knows no paper: profiles, atomic artifacts and stage folders, the notebook runner,
tables, deviations, the report and its provenance, the environment check."""
