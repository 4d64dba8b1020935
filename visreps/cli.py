"""The `visreps` command: `visreps <command> [options] [key=value ...]`.

Each command lives in ``visreps/stages/<command>.py`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``; the MLproject entry points call the same code through ``entrypoints/<stage>.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from visreps import __version__
from visreps.errors import VisrepsError

#: command name -> module; help text is the module docstring's first line
COMMANDS: dict[str, str] = {
    "demo_data": "visreps.stages.demo_data",
    "labels": "visreps.stages.labels",
    "train": "visreps.stages.train",
    "image_cache": "visreps.stages.image_cache",
    "evaluate": "visreps.stages.evaluate",
    "compare": "visreps.stages.compare",
    "sweep": "visreps.stages.sweep",
    "figures": "visreps.stages.figures",
    "dashboard": "visreps.stages.dashboard",
    "pipeline": "visreps.stages.pipeline",
    "score": "visreps.stages.score",
    "datasets": "visreps.stages.datasets",
    "server": "visreps.stages.server",
}


def _command_module(name: str):
    return importlib.import_module(COMMANDS[name])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; with ``command`` only that sub-command is imported (fast start)."""
    parser = argparse.ArgumentParser(prog="visreps", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"visreps {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name in COMMANDS:
        if command is not None and name != command:
            commands.add_parser(name, help="(run `visreps NAME --help`)")
            continue
        module = _command_module(name)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        sub = commands.add_parser(name, help=summary, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input ends with one clear line on stderr and exit status 2; a closed stdout
    (output piped into `head`) ends quietly with status 141, as for other command-line tools."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        status = int(_command_module(args.command).run(args) or 0)
        sys.stdout.flush()  # a reader that went away (`visreps ... | head`) shows here, not at interpreter exit
        return status
    except VisrepsError as error:
        print(f"visreps {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE_STATUS


#: exit status when the reader of stdout closed it early: 128 + SIGPIPE, what a shell reports for `yes | head`
BROKEN_PIPE_STATUS = 141


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not raise (and print) again."""
    with contextlib.suppress(OSError, ValueError):  # stdout without a file descriptor (captured): nothing to flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
