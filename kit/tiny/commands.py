"""``kit models``: build and list the tiny models (``kit.tiny.pretrain``), probe and gate their perception
(``kit.tiny.gates``), diagnose a teacher (``kit.tiny.diagnose``) and check a model's skill band (``kit.tiny.band``).
One place wires them, so that no module imports another's command line."""

from __future__ import annotations


def register(subparsers) -> None:
    from kit.tiny import band, diagnose, gates, pretrain

    models = pretrain.register(subparsers)
    gates.register(models)
    gates.register_probe(models)
    diagnose.register(models)
    band.register(models)
