"""Helpers shared by the benchmarks: argument parsing and result tables."""

from __future__ import annotations

import argparse
import platform
import statistics

import numpy as np


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a few iterations only: checks the benchmark runs")
    return parser.parse_args()


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleaved(variants: list[str], rounds: int, measure) -> dict[str, list[float]]:
    """``measure(variant)`` for every variant in every round, the order rotated each round."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    for index in range(rounds):
        shift = index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            times[variant].append(measure(variant))
    return times


def ratio_rows(times: dict[str, list[float]], baseline: str) -> list[list[str]]:
    """Per variant: median time, median of per-round ratios to ``baseline``, and their middle half."""
    rows = []
    for variant, values in times.items():
        ratios = np.array([mine / base for mine, base in zip(values, times[baseline])])
        low, high = np.percentile(ratios, [25, 75])
        rows.append([variant, f"{median(values) * 1e3:.2f} ms", f"{median(ratios):.3f}", f"{low:.3f} .. {high:.3f}"])
    return rows
