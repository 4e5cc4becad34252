"""Options dataclasses that carry their own command-line flags.

A field made with :func:`option` holds its default and, in its metadata, the help text of its flag
(``--tile-overlap`` for ``tile_overlap`` unless the field names another). :func:`add_arguments`
turns such a dataclass into argparse arguments with the dataclass's own defaults (a field without
one is a required flag; a plain field, such as a positional argument, is left to the caller), and
:func:`from_arguments` turns the parsed arguments back into the dataclass. A default or a help text
is written once, beside its field, so the library (``restore.upscale``) and the command
(``restore upscale``) cannot disagree, as Lightning's CLI reads a module's ``__init__``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import typing
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from .errors import OptionError

T = TypeVar("T")


def option(default: Any, help: str, *, flag: str | tuple[str, ...] | None = None, choices: Sequence | None = None,
           metavar: str | None = None) -> Any:
    """A dataclass field with ``default`` and the metadata of its command-line flag.

    ``default`` ``dataclasses.MISSING``: the field must be given, and so must its flag. ``help``
    may use argparse's ``%(default)s``. ``flag`` replaces ``--field-name`` (a tuple: several names,
    ``("-q", "--quiet")``): a ``bool`` field whose default is True needs one that says what giving
    it turns off (``--no-audio`` for ``keep_audio``). ``choices`` limits what the command line
    accepts; ``metavar`` names the value in the help.
    """
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices,
                                                        "metavar": metavar})


def _value_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``: the type argparse converts a given value to."""
    given = [a for a in typing.get_args(annotation) if a is not type(None)]
    return given[0] if given else annotation


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the dataclass ``cls`` made with :func:`option`, in field order, stored
    under the field's name; a ``bool`` field is a switch that flips its default, a field without a
    default a required flag. Other fields (positional arguments) are the caller's to add."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        flags = meta["flag"] or "--" + f.name.replace("_", "-")
        flags = (flags,) if isinstance(flags, str) else flags
        kind = _value_type(hints[f.name])
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, action="store_false" if f.default else "store_true", help=meta["help"])
        else:
            given = {"required": True} if f.default is dataclasses.MISSING else {"default": f.default}
            parser.add_argument(*flags, dest=f.name, type=kind, choices=meta["choices"], metavar=meta["metavar"],
                                help=meta["help"], **given)


def from_arguments(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``cls`` from parsed arguments: each field from the argument stored under its name."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init})


@contextlib.contextmanager
def settings_check() -> Iterator[None]:
    """Run checks that raise ``ValueError`` for a bad setting (the engine's chunk and tile plans, the
    encoder's options), so that the user gets an :class:`~restore.errors.OptionError`: one line,
    not a traceback. Their messages already name the option."""
    try:
        yield
    except OptionError:
        raise
    except ValueError as exc:
        raise OptionError(None, str(exc)) from None
