"""Shared pieces of the `weaver` CLI: the Typer app, common options, output and error mapping."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

# Typer (0.29) parses with its own copy of Click: its parse errors are these classes, not click's.
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from weaver.core.errors import InvalidParameterError, InvalidTimepointError, WeaverError
from weaver.core.settings import Settings, check_confidence, load_settings
from weaver.core.storage import check_woven_root
from weaver.core.time import parse_timepoint

console = Console(stderr=True)
out = Console()

LakeOpt = typer.Option(None, "--lake", envvar="WEAVER_LAKE", help="Lake root (default $WEAVER_LAKE or ./lake).")
JsonOpt = typer.Option(False, "--json", help="Print one machine-readable JSON object.")


def settings_for(lake: Optional[str], **overrides: Any) -> Settings:
    """Settings read once from the environment, with this command's flags on top. A ``--woven-root``
    Weaver may not create the woven tier in is refused here, before anything is read or written
    (:func:`weaver.core.storage.check_woven_root`)."""
    s = load_settings(lake=lake or None, **overrides)
    if overrides.get("woven_root") is not None:
        check_woven_root(s, what="--woven-root")
    return s


def timepoint(value: str, name: str = "--at") -> datetime:
    """Option `name`'s instant; a bad one raises InvalidTimepointError naming the option. Call it
    inside :func:`reported`, as every bad input is: under ``--json`` the error is one JSON object
    (not Click's usage box), exit 2, before anything is read or written."""
    try:
        return parse_timepoint(value)
    except InvalidTimepointError as exc:
        raise InvalidTimepointError(f"{name}: {exc}") from exc


def confidence(value: Optional[float], name: str = "--confidence-threshold") -> Optional[float]:
    """Option `name`'s threshold (None: the lake's default); one outside [0, 1] or NaN raises
    InvalidConfidenceError naming the option. Call it inside :func:`reported`, like
    :func:`timepoint`, so that under ``--json`` the error is one JSON object, not Click's usage box."""
    return None if value is None else check_confidence(value, what=name)


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, timedelta):
        return o.total_seconds()
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    return str(o)


def emit(obj: dict, as_json: bool, human: Any = None) -> None:
    """Print `obj` as one JSON object (``--json``) or `human` (a Rich renderable or text)."""
    if as_json:
        sys.stdout.write(json.dumps(obj, default=_default, sort_keys=True) + "\n")
    else:
        out.print(human if human is not None else obj)


def fail(exc: Exception, as_json: bool = False) -> "typer.Exit":
    """Report a user error in one line (or JSON) and return the exit to raise.

    The line is printed unwrapped (Rich would wrap it at 80 columns when stderr is not a terminal,
    splitting one error over several lines of a log) and the message as text, not Rich markup (a
    message quoting ``[left, right]`` must not lose it).
    """
    name = type(exc).__name__
    if as_json:
        sys.stdout.write(json.dumps({"error": name, "message": str(exc)}) + "\n")
    console.print(f"[bold red]error[/] ({name}): {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=2)


@contextmanager
def reported(as_json: bool) -> Iterator[None]:
    """Run a command's body; a WeaverError leaves as the CLI's one way to fail (one line or JSON, exit 2)."""
    try:
        yield
    except WeaverError as exc:
        raise fail(exc, as_json) from None


def _wants_json(args: list[str]) -> bool:
    """Whether the command line asks for ``--json`` (before a ``--`` that ends the options)."""
    head = args[:args.index("--")] if "--" in args else args
    return "--json" in head


def _usage_error(exc: UsageError, as_json: bool) -> "typer.Exit":
    """A value Click refused while parsing (not a number, out of its range, a missing option, an
    unknown option or command) as the CLI's one way to fail: InvalidParameterError, one line or
    one JSON object, exit 2 - the same as a bad value the commands check themselves."""
    where = exc.ctx.command_path if exc.ctx is not None else "weaver"
    return fail(InvalidParameterError(f"{exc.format_message().rstrip('.')}; see `{where} --help`"), as_json)


class WeaverGroup(TyperGroup):
    """The root command group: Click's own parse errors leave through :func:`fail` too.

    Click raises them while it parses (the root's arguments in ``make_context``, a command's in the
    root's ``invoke``), before a command's :func:`reported` runs; left to Typer they print a usage
    box on stderr and nothing on stdout, which a ``--json`` caller cannot read. Asking for help
    with no arguments stays help.
    """

    _JSON = "weaver.json"

    def make_context(self, info_name: Optional[str], args: list[str], parent: Optional[typer.Context] = None,
                     **extra: Any) -> typer.Context:
        as_json = _wants_json(list(args))  # before parsing consumes `args`
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            raise _usage_error(exc, as_json) from None
        ctx.meta[self._JSON] = as_json
        return ctx

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            raise _usage_error(exc, ctx.meta.get(self._JSON, False)) from None


app = typer.Typer(name="weaver", help="Temporal Weaver: forecast partition splits and weave shadow snapshots.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=WeaverGroup)


@app.callback()
def _root() -> None:
    """Temporal Weaver: forecast partition splits and weave shadow snapshots."""
