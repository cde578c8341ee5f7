"""The evaluation report: one markdown file and PNG plots (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evaluation.runner import ProtocolResult

COLUMNS = (
    "ndcg10",
    "hr10",
    "mrr",
    "coverage",
    "top1pct_share",
    "exposure_gini",
    "ild",
    "novelty",
    "requests",
)


def _table(rows: Mapping[str, Mapping[str, float]]) -> list[str]:
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method, figures in rows.items():
        cells = [
            f"{figures.get(c, float('nan')):.4f}" if c != "requests" else f"{figures.get(c, 0):.0f}"
            for c in COLUMNS
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def plot_accuracy(results: Sequence[ProtocolResult], path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        methods = list(result.figures)
        x = range(len(methods))
        ax.bar(
            [i - 0.2 for i in x],
            [result.figures[m]["ndcg10"] for m in methods],
            0.4,
            label="NDCG@10",
        )
        ax.bar(
            [i + 0.2 for i in x], [result.figures[m]["hr10"] for m in methods], 0.4, label="HR@10"
        )
        ax.set_xticks(list(x), methods)
        ax.set_title(result.name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curve in curves.items():
        if curve:
            ax.plot(
                [c["epoch"] for c in curve],
                [c["val_ndcg10"] for c in curve],
                marker=".",
                label=name,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_beyond_accuracy(results: Sequence[ProtocolResult], path: Path) -> None:
    keys = ("coverage", "top1pct_share", "exposure_gini", "ild")
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        methods = list(result.figures)
        width = 0.8 / len(methods)
        for j, method in enumerate(methods):
            ax.bar(
                [i + j * width for i in range(len(keys))],
                [result.figures[method][k] for k in keys],
                width,
                label=method,
            )
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys)
        ax.set_title(result.name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    directory: Path,
    results: Sequence[ProtocolResult],
    flat: Mapping[str, Any],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    notes: Sequence[str],
) -> Path:
    """Write ``report.md`` and its plots into ``directory``; returns the markdown path."""
    directory.mkdir(parents=True, exist_ok=True)
    plot_accuracy(results, directory / "accuracy.png")
    plot_beyond_accuracy(results, directory / "beyond_accuracy.png")
    plot_training_curves(curves, directory / "training_curves.png")
    lines = ["# Ranker offline evaluation", "", f"Machine: {flat.get('machine', '?')}", ""]
    lines += [f"- {n}" for n in notes]
    for result in results:
        lines += ["", f"## {result.name}", "", *_table(result.figures)]
        if result.cold:
            lines += ["", "Cold-start requests (< 5 events in the history), reported apart:", ""]
            lines += _table(result.cold)
        lines += [
            "",
            f"Chosen on validation: {result.chosen}; validation NDCG@10: "
            + ", ".join(f"{k} {v:.4f}" for k, v in result.validation_ndcg10.items()),
        ]
        for model, versus in result.against_best_baseline.items():
            lines += [
                "",
                f"{model} vs the best baseline ({versus['baseline']}), NDCG@10: "
                f"{versus['gain']:+.1%} (95 % CI {versus['ci95_low']:+.1%} … "
                f"{versus['ci95_high']:+.1%}, paired bootstrap over the test users)",
            ]
    lines += [
        "",
        "![accuracy](accuracy.png)",
        "",
        "![beyond accuracy](beyond_accuracy.png)",
        "",
        "![training curves](training_curves.png)",
        "",
        "## Flat figures",
        "",
        "```",
    ]
    lines += [f"{k}: {v}" for k, v in sorted(flat.items())]
    lines += ["```", ""]
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path
