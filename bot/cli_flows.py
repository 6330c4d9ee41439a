"""`cobrabot flows`: check conversation flows before they are published."""

from __future__ import annotations

from pathlib import Path

import click

from flows.validator import FlowProblem, validate_flow_file

EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2


@click.group("flows")
def flows_group() -> None:
    """Conversation flows (YAML)."""


@flows_group.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def validate(context: click.Context, files: tuple[Path, ...]) -> None:
    """Check each FILE and print its problems as FILE:LINE: path: message.

    Exits 1 when any file has problems and 2 when a file cannot be read; every file is checked either way.
    """
    status = 0
    for file in files:
        try:
            problems = validate_flow_file(file)
        except (OSError, UnicodeDecodeError) as exc:
            click.echo(f"{file}: cannot read: {_reason(exc)}", err=True)
            status = EXIT_UNREADABLE
            continue
        for problem in problems:
            click.echo(format_problem(file, problem))
        if problems:
            status = max(status, EXIT_PROBLEMS)
        else:
            click.echo(f"{file}: ok")
    context.exit(status)


def format_problem(file: Path, problem: FlowProblem) -> str:
    """GNU style, so editors and CI annotate the line: FILE:LINE: path: message."""
    location = f"{file}:{problem.line}" if problem.line is not None else str(file)
    return ": ".join(part for part in (location, problem.path, problem.message) if part)


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or str(exc)
