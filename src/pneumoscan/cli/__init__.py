"""The ``pneumoscan`` command line: parses arguments (``cli.parsers``) and runs a command (``cli.commands``);
a user's mistake ends in one line naming the problem and exit code 2, never a traceback."""

from __future__ import annotations

import logging
import sys

from pneumoscan.cli import commands
from pneumoscan.cli.anatomy import cmd_segment
from pneumoscan.cli.commands import _print_summary  # noqa: F401  (the run summary train and demo print)
from pneumoscan.cli.node import cmd_dicom_node, cmd_worklist
from pneumoscan.cli.parsers import build_parser

log = logging.getLogger("pneumoscan")

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)

COMMANDS = {"train": commands.cmd_train, "evaluate": commands.cmd_evaluate, "predict": commands.cmd_predict,
            "checks": commands.cmd_checks, "explain": commands.cmd_explain, "export": commands.cmd_export,
            "serve": commands.cmd_serve, "compare": commands.cmd_compare, "tune": commands.cmd_tune,
            "demo": commands.cmd_demo, "describe": commands.cmd_describe, "cache": commands.cmd_cache,
            "segment": cmd_segment, "dicom-node": cmd_dicom_node, "worklist": cmd_worklist}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[console])
    from pneumoscan.data.io import ImageLoadError

    try:
        return COMMANDS[args.command](args)
    except (ImageLoadError, *USER_ERRORS) as err:
        print(f"pneumoscan {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pneumoscan {args.command}: interrupted", file=sys.stderr)
        return 130
