"""Settings dataclasses as command-line options, and back, each field documented once (as TRL builds its
command lines from its ``*Config`` dataclasses).

::

    options = SettingsOptions(SFTSettings, flags={"finetune_vision_layers": "--finetune-vision"})
    options.add_to(parser)                      # --lora-r, --target-modules, --finetune-vision/--no-..., ...
    settings = options.settings(parser.parse_args(argv))
    options.argv(settings)                      # ["--lora-r", "4", ...]: the options that give `settings` back

A field's option is ``--field-name`` (or its ``flags`` entry); its help is the field's ``metadata["help"]``,
else the comment at the end of the field's line in the class source, else its name. Types come from the
annotations: ``bool`` is a ``--x/--no-x`` pair, ``tuple[str, ...]`` takes several values, ``X | None``
also takes ``none``, ``Literal[...]`` or ``metadata["choices"]`` limit the values, ``dict`` takes a JSON
object. Numbers keep their type: ``5`` for a ``float`` field is the int 5 and ``5.0`` the float, because
stage hashes spell them differently (``kit.core.artifacts.canonical_json``), and a command built from settings
must train into the very folder those settings name.

``argv`` is exact: parsing its result gives settings whose ``repr`` equals the original's (field types
included), or it raises ``KitError`` naming the field that has no command-line spelling.

``accelerate_command`` is the ``accelerate launch`` line the training modules' ``launch_command`` build on.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, NoReturn, TypeVar, Union, get_args, get_origin, get_type_hints

from kit.errors import KitError

T = TypeVar("T")
NONE = "none"  # how an optional field is set back to None on the command line
_WHOLE = re.compile(r"[+-]?\d+")


def _whole(text: str) -> int:
    if not _WHOLE.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def _number(text: str) -> int | float:
    # An integer spelling stays an int: a float field holding 5 and one holding 5.0 hash differently.
    if _WHOLE.fullmatch(text.strip()):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == NONE else parse(text)

    return parse_or_none


def _choice(choices: Sequence[Any]) -> Callable[[str], Any]:
    # Literal choices need not be strings; match by spelling and hand back the choice itself.
    def parse(text: str) -> Any:
        for choice in choices:
            if str(choice) == text:
                return choice
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(map(str, choices))})")

    return parse


_PARSERS: dict[Any, Callable[[str], Any]] = {int: _whole, float: _number, str: str, Path: Path}
_METAVARS: dict[Any, str] = {int: "N", float: "X", str: "TEXT", Path: "PATH"}


def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` for each field of ``cls`` whose line in the class source ends with a comment
    (``max_steps: int = -1  # > 0 overrides epochs``); empty when the source is not available."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    body_column, current, previous = None, None, None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.INDENT and body_column is None:
            body_column = token.end[1]
        elif token.type == tokenize.NEWLINE:
            current = None
        elif (token.type == tokenize.OP and token.string == ":" and previous is not None
              and previous.type == tokenize.NAME and previous.start[1] == body_column):
            current = previous.string  # `name:` at the start of a class-body line: a field
        elif token.type == tokenize.COMMENT and current is not None:
            comments[current] = token.string.lstrip("#").strip()
        previous = token if token.type not in (tokenize.COMMENT, tokenize.NL) else previous
    return comments


@dataclasses.dataclass(frozen=True)
class _Option:
    name: str
    flags: tuple[str, ...]
    parse: Callable[[str], Any] | None  # None: a bool switch
    many: bool  # tuple[X, ...]: several values
    optional: bool
    choices: tuple[Any, ...] | None
    default: Any
    help: str
    metavar: str | None

    def spell(self, value: Any) -> list[str]:
        flag = self.flags[0]
        if self.parse is None:
            return [flag if value else f"--no-{flag[2:]}"]
        if value is None:
            return [f"{flag}={NONE}"]
        if self.many:
            return [flag, *(str(item) for item in value)]
        if isinstance(value, dict):
            text = json.dumps(value)
        elif isinstance(value, float):
            text = repr(value)  # the shortest spelling that reads back as the same float
        else:
            text = str(value)
        # `--x=-1`: argparse would take a separate "-1e-05" for an option, not a value.
        return [f"{flag}={text}"] if text.startswith("-") else [flag, text]


class _RaisingParser(argparse.ArgumentParser):
    """A parser that raises instead of printing usage and exiting (``exit_on_error=False`` does not cover
    unrecognized arguments)."""

    def error(self, message: str) -> NoReturn:
        raise KitError(f"{self.prog}: {message}")


class SettingsOptions(Generic[T]):
    """The command-line options of the settings dataclass ``cls``: one per init field not in ``skip``.
    ``flags`` renames fields' options (a name or several, the first being the one ``argv`` writes)."""

    def __init__(self, cls: type[T], *, flags: Mapping[str, str | Sequence[str]] | None = None,
                 skip: Iterable[str] = ()) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        self.cls = cls
        flags, skip = dict(flags or {}), set(skip)
        unknown = (set(flags) | skip) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
        hints = get_type_hints(cls, include_extras=True)
        comments = field_comments(cls)
        self.options: list[_Option] = []
        for f in dataclasses.fields(cls):
            if not f.init or f.name in skip:
                continue
            given = flags.get(f.name) or f"--{f.name.replace('_', '-')}"
            names = (given,) if isinstance(given, str) else tuple(given)
            self.options.append(self._option(f, hints[f.name], names, f.metadata.get("help") or comments.get(f.name)
                                             or f.name.replace("_", " ")))

    def _option(self, f: dataclasses.Field, hint: Any, flags: tuple[str, ...], text: str) -> _Option:
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        optional, many, choices = False, False, f.metadata.get("choices")
        if get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint):
            rest = [a for a in get_args(hint) if a is not type(None)]
            if len(rest) != 1:
                raise TypeError(f"{self.cls.__name__}.{f.name}: cannot read {hint} from a command line")
            optional, hint = True, rest[0]
        if get_origin(hint) is tuple:
            items = get_args(hint)
            if len(items) != 2 or items[1] is not Ellipsis:
                raise TypeError(f"{self.cls.__name__}.{f.name}: only tuple[X, ...] is supported, not {hint}")
            many, hint = True, items[0]
        if get_origin(hint) is Literal:
            choices = get_args(hint)
        if hint is bool and not many and not optional:
            parse = None
        elif choices is not None:
            parse = _choice(tuple(choices))
        elif hint is dict or get_origin(hint) is dict:
            parse = _json_object
        elif hint in _PARSERS:
            parse = _PARSERS[hint]
        else:
            raise TypeError(f"{self.cls.__name__}.{f.name}: cannot read {hint} from a command line")
        metavar = None if parse is None else (
            "{" + ",".join(map(str, choices)) + "}" if choices is not None
            else _METAVARS.get(hint, "JSON" if parse is _json_object else "VALUE"))
        if optional:
            parse = _optional(parse)
            metavar = f"{metavar}|{NONE}" if metavar else metavar
        return _Option(f.name, flags, parse, many, optional, tuple(choices) if choices is not None else None,
                       default, text, metavar)

    # ---------------------------------------------------------------------------------------- parse
    def add_to(self, parser: argparse.ArgumentParser, title: str | None = None) -> None:
        """Add the options to ``parser`` in a group of their own. An option left out keeps the class's default
        (the parsed namespace lacks it), so ``settings`` builds exactly what the class would."""
        group = parser.add_argument_group(title or f"{self.cls.__name__} (one option per field)")
        for option in self.options:
            shown = "" if option.default is dataclasses.MISSING else f" (default: {self._shown(option.default)})"
            kwargs: dict[str, Any] = dict(dest=option.name, default=argparse.SUPPRESS,
                                          required=option.default is dataclasses.MISSING,
                                          help=(option.help + shown).replace("%", "%%"))
            if option.parse is None:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = option.parse
                kwargs["metavar"] = option.metavar
                if option.many:
                    kwargs["nargs"] = "*"
            group.add_argument(*option.flags, **kwargs)

    @staticmethod
    def _shown(value: Any) -> str:
        if value is None:
            return NONE
        if isinstance(value, tuple):
            return " ".join(map(str, value))
        if isinstance(value, dict):
            return json.dumps(value)
        return str(value)

    def settings(self, args: argparse.Namespace | Mapping[str, Any]) -> T:
        """The settings the parsed options give (the class's defaults for those not given); the class's own
        checks run (a ``KitError`` for bad values)."""
        given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        values = {o.name: given[o.name] for o in self.options if o.name in given}
        for option in self.options:
            if option.many and option.name in values:
                values[option.name] = tuple(values[option.name])
        return self.cls(**values)

    def parse(self, argv: Sequence[str]) -> T:
        """The settings ``argv`` (options only) gives; a bad option or value is a ``KitError``."""
        parser = _RaisingParser(prog=self.cls.__name__, add_help=False, exit_on_error=False)
        self.add_to(parser)
        try:
            args = parser.parse_args(list(argv))
        except argparse.ArgumentError as err:
            raise KitError(f"{self.cls.__name__}: {err}") from None
        return self.settings(args)

    # ---------------------------------------------------------------------------------------- write
    def argv(self, settings: T, *, every: bool = False) -> list[str]:
        """The options that give ``settings`` back: those whose value differs from the default (its ``repr``:
        5 and 5.0 differ), or ``every`` one. Raises ``KitError`` when a value has no exact spelling (a
        tuple in ``extra``, a module name starting with '-')."""
        if not isinstance(settings, self.cls):
            raise TypeError(f"expected {self.cls.__name__}, got {type(settings).__name__}")
        out: list[str] = []
        for option in self.options:
            value = getattr(settings, option.name)
            if every or repr(value) != repr(option.default):
                out += option.spell(value)
        try:
            back = self.parse(out)
        except KitError as err:
            raise KitError(f"{self.cls.__name__}: {settings!r} has no command-line spelling ({err})") from None
        for f in dataclasses.fields(self.cls):  # skipped fields too: they read back as their defaults
            if f.init and repr(getattr(back, f.name)) != repr(getattr(settings, f.name)):
                raise KitError(f"{self.cls.__name__}.{f.name} = {getattr(settings, f.name)!r} has no exact "
                               f"command-line spelling (it reads back as {getattr(back, f.name)!r})")
        return out


def accelerate_command(module: str, arguments: Sequence[str], *, processes: int = 2,
                       extra_launch_args: Sequence[str] = ()) -> list[str]:
    """``accelerate launch`` running ``python -m module arguments`` in ``processes`` processes, as the tests
    launch two CPU processes (``--multi_gpu`` is what starts several processes; without a GPU they are CPU
    processes). The ``accelerate`` next to this interpreter when there is one, so that the processes import
    this environment's ``kit``. ``extra_launch_args`` go before ``-m`` (e.g. ``--gpu_ids 0,1``,
    ``--main_process_port 29501``)."""
    if not isinstance(processes, int) or processes < 1:
        raise KitError(f"accelerate launch: processes must be a whole number >= 1, not {processes!r}")
    beside = Path(sys.executable).parent / "accelerate"
    launcher = str(beside) if beside.is_file() else "accelerate"
    several = ["--multi_gpu"] if processes > 1 else []
    return [launcher, "launch", *several, "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", *extra_launch_args, "-m", module, *arguments]


def absolute_if_local(source: str | Path) -> str:
    """``source`` as an absolute path when it names something here (so the command runs from any folder), else
    as it is (a hub id). Stage hashes key local sources by content, so this never changes a stage folder."""
    path = Path(source)
    return str(path.absolute()) if path.exists() else str(source)


# Profile keys spelled otherwise than the settings field they set.
PROFILE_RENAMES = {"vision_layers": "finetune_vision_layers"}


def settings_from_profile(settings_class: type, values: Mapping[str, Any], **overrides: Any) -> Any:
    """``settings_class`` built from a profile section's ``values``: the keys that are its fields (``vision_layers``
    sets ``finetune_vision_layers``; others, such as ``rows`` or ``max_new_tokens``, belong to other stages), then
    ``overrides``. The one way a training recipe is read from a profile, by the pipelines and by the profile's
    own validation alike."""
    fields = {field.name for field in dataclasses.fields(settings_class)}
    given = {PROFILE_RENAMES.get(key, key): value for key, value in values.items()}
    recipe = {key: value for key, value in given.items() if key in fields and key != "extra"}
    if "target_modules" in recipe:
        recipe["target_modules"] = tuple(recipe["target_modules"] or ())
    return settings_class(**{**recipe, **overrides})
