"""The `askdocs` command line: parser and entry point (main), commands, output formatting, exit codes."""

from bot.cli.main import main

__all__ = ["main"]
