"""CLI: ``nuviot-runtime [run] [flags]``, ``nuviot-runtime validate FILE``, ``nuviot-runtime import EXPORT -o FILE``,
``nuviot-runtime test-message --solution F --listener KEY --topic T|--path P --payload @file|text``.

``python -m runtime`` is the same program.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from runtime import __version__
from runtime.settings import SettingsError, add_run_arguments, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nuviot-runtime", description="NuvIoT Container Runtime, re-implemented in Python."
    )
    parser.add_argument("--version", action="version", version=f"nuviot-runtime {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the daemon (the default)")
    add_run_arguments(run)
    validate = sub.add_parser("validate", help="check a solution file; prints 'path: message' per problem")
    validate.add_argument("file")
    imp = sub.add_parser("import", help="convert a NuvIoT export (JSON) into the native YAML form")
    imp.add_argument("file")
    imp.add_argument("-o", "--output", required=True)
    test = sub.add_parser("test-message", help="dry-run one message through a solution's pipeline (no side effect)")
    from runtime.dryrun_cli import add_arguments

    add_arguments(test)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        from runtime.solution_cli import validate_main

        return validate_main(args.file)
    if args.command == "import":
        from runtime.solution_cli import import_main

        return import_main(args.file, args.output)
    if args.command == "test-message":
        from runtime.dryrun_cli import main as test_message_main

        return test_message_main(args)
    return run(args)


def run(args: argparse.Namespace) -> int:
    from runtime import logsetup

    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"nuviot-runtime: {exc}", file=sys.stderr)
        return 1
    logsetup.configure(settings.log_level, settings.log_format)
    from runtime.app import main as app_main

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(app_main(settings))
    return uvloop.run(app_main(settings))


if __name__ == "__main__":
    sys.exit(main())
