"""``kit models``: build and list the tiny models (``kit.tiny.pretrain``), probe and gate their perception
(``kit.tiny.gates``). One place wires both, so that neither module imports the other's command line."""

from __future__ import annotations


def register(subparsers) -> None:
    from kit.tiny import diagnose, gates, pretrain

    models = pretrain.register(subparsers)
    gates.register(models)
    gates.register_probe(models)
    diagnose.register(models)
