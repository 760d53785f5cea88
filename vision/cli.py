"""The `vision` command.

Thin glue only: each package contributes its own sub-commands through the
``vision.commands`` entry-point group (``training``, ``inference``, ``review``), so `vision`
never imports them and imports keep pointing one way.

Exit codes: 0 success, 1 finished with some items failed (reported), 2 usage or
configuration error.
"""

from __future__ import annotations

import inspect
import logging
import sys
from importlib.metadata import entry_points

import typer
from rich.markup import escape

from vision.console import make_console
from vision.errors import ConfigError, VisionError

app = typer.Typer(
    name="vision",
    help="Classify satellite and aerial imagery: train models, batch-classify archives, "
    "review results.\n\nStart with `vision demo`, then `vision COMMAND --help`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = make_console(stderr=True)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def _register_data() -> None:
    from vision.data.commands import register

    register(app)


def prose(text: str) -> str:
    """A help text with each paragraph on one line, so that the terminal wraps it at its own
    width: Typer's Rich help keeps every line break of the source, and a paragraph written at
    95 columns turned into a ragged column of 80- and 15-character lines in an 80-column
    terminal. Paragraphs Click must keep as they are (``\\b`` blocks, examples) and those with
    indented or bulleted lines are left alone."""
    out = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        keep = para.startswith("\b") or any(ln[:1].isspace() or ln.lstrip()[:2] in ("- ", "* ")
                                             for ln in lines[1:])
        out.append(para if keep else " ".join(ln.strip() for ln in lines if ln.strip()))
    return "\n\n".join(out)


def unwrap_help(typer_app: typer.Typer) -> None:
    """`prose` for the help of every command of ``typer_app`` and its groups (the text given
    to ``app.command(help=...)``, else the callback's docstring)."""
    for info in typer_app.registered_commands:
        text = info.help if isinstance(info.help, str) else inspect.getdoc(info.callback) if info.callback else None
        if text:
            info.help = prose(text)
    for group in typer_app.registered_groups:
        if isinstance(group.help, str):
            group.help = prose(group.help)
        if group.typer_instance is not None:
            unwrap_help(group.typer_instance)


def _register_plugins() -> None:
    for ep in sorted(entry_points(group="vision.commands"), key=lambda e: e.name):
        ep.load()(app)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _print_error(exc: BaseException) -> None:
    """``error: MESSAGE``; the message is escaped, as it quotes paths and other user input
    (Rich would read a ``[/x]`` in a folder name as markup, and fail on it)."""
    console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)


def main() -> None:
    """Entry point: run the CLI, turning expected errors into messages and exit codes."""
    _register_data()
    _register_plugins()
    unwrap_help(app)
    try:
        rv = app(standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("[red]aborted[/red]")
        sys.exit(EXIT_USAGE)
    except ConfigError as exc:
        _print_error(exc)
        sys.exit(EXIT_USAGE)
    except VisionError as exc:
        _print_error(exc)
        sys.exit(EXIT_PARTIAL)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except Exception as exc:
        # Usage errors (missing argument, bad option value): typer raises click-style
        # exceptions from its own vendored click, so match on the interface, not the class.
        show = getattr(exc, "show", None)
        if callable(show) and hasattr(exc, "exit_code"):
            show()
            sys.exit(EXIT_USAGE)
        raise


if __name__ == "__main__":
    main()
