"""Core subcommands: data, bench, score, train-rm (filled in below)."""

from __future__ import annotations


def register(subparsers) -> None:
    pass
