"""Writes workloads.md and the plots from the files a workloads run saved."""

from __future__ import annotations

import pathlib


def write(out: pathlib.Path) -> None:
    pass
