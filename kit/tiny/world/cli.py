"""``kit world build`` and ``kit world show``: build the tiny world a profile names, and print a few
records of one family to see what a loader will read."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kit.errors import KitError


def register(subparsers: argparse._SubParsersAction) -> None:
    from kit.tiny.world.families import FAMILIES

    parser = subparsers.add_parser("world", help="build or inspect the embedded tiny world")
    sub = parser.add_subparsers(dest="world_command", required=True)

    build = sub.add_parser("build", help="write every tiny-world family (skipped when already up to date)")
    build.add_argument(
        "--profile", default="tiny", help="profile whose world: section to use (default: tiny)"
    )
    build.add_argument(
        "--root", type=Path, default=None, help="where to build (default: the profile's world.root)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even when MANIFEST.json matches")
    build.set_defaults(func=_build)

    show = sub.add_parser("show", help="print a few records of one family")
    show.add_argument("family", choices=FAMILIES)
    show.add_argument("--n", type=int, default=3, help="how many records (default: 3)")
    show.add_argument("--profile", default="tiny", help="profile whose world.root to read (default: tiny)")
    show.add_argument(
        "--root", type=Path, default=None, help="world folder (default: the profile's world.root)"
    )
    show.set_defaults(func=_show)


def world_settings(profile_name: str) -> tuple[dict, Path]:
    """The profile's ``world:`` section and the folder it names (``world.root``, default data/tiny)."""
    from kit.core.profile import load_profile

    profile = load_profile(profile_name)
    world = profile.get("world")
    if not isinstance(world, dict):
        raise KitError(f"profile {profile.path}: world must be a mapping of sizes")
    root = profile.resolve_path(world.get("root", "data/tiny"))
    return world, Path(root)


def _build(args: argparse.Namespace) -> int:
    from kit.tiny.world import FAMILIES, WorldConfig, build_world, read_manifest

    world, default_root = world_settings(args.profile)
    root = args.root or default_root
    config = WorldConfig.from_profile(world)
    before = read_manifest(root)
    start = time.perf_counter()
    manifest = build_world(root, config, force=args.force)
    seconds = time.perf_counter() - start
    state = "up to date" if manifest == before and not args.force else f"built in {seconds:.1f} s"
    print(f"tiny world at {root}: {state}")
    for family in FAMILIES:
        count = manifest["counts"][family]
        print(f"  {family:16s} {count['records']:6d} records  {count['images']:6d} images")
    return 0


def _show(args: argparse.Namespace) -> int:
    from kit.tiny.world import load_records, read_manifest

    root = args.root or world_settings(args.profile)[1]
    if read_manifest(root) is None:
        raise KitError(f"no tiny world at {root}: run `kit world build --profile {args.profile}` first")
    if args.n < 1:
        raise KitError(f"--n must be at least 1, not {args.n}")
    for record in load_records(root, args.family)[: args.n]:
        print(json.dumps(record, indent=2, ensure_ascii=False))
    return 0
