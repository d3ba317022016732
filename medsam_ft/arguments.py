"""Command-line conventions shared by ``medsam-ft`` and the ``data_prep`` converters.

Long options are spelled with underscores, as the bundles' overrides are (``--val_cases`` everywhere);
the dashed spelling (``--val-cases``) is still accepted, unlisted. Every ``--help`` shows defaults and
the command as users type it; every parser answers ``--version``.
"""

from __future__ import annotations

import argparse
from typing import Any

import medsam_ft


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; descriptions kept as written."""


def argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the project's conventions.

    Args:
        prog: the command as users type it (``medsam-ft``, ``python -m data_prep.folder2d``).
        description: shown by ``--help``.

    Returns:
        The parser, with ``--version``.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"medsam-ft {medsam_ft.__version__}")
    return parser


def add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, *short: str,
               **kwargs: Any) -> None:
    """Add ``--name`` (underscores) and its unlisted dashed spelling.

    Args:
        parser: the parser or argument group.
        name: the option without dashes, words joined by underscores (``val_cases``).
        short: short forms (``-i``).
        kwargs: as ``add_argument``.
    """
    parser.add_argument(*short, f"--{name}", **kwargs)
    if "_" in name:
        hidden = {k: v for k, v in kwargs.items() if k not in ("help", "required", "default")}
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=argparse.SUPPRESS,
                            default=argparse.SUPPRESS, **hidden)
