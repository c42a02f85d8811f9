"""Benchmark outputs: the Markdown table and the PNG plots (speedup bars, tokens-per-call histogram)."""

from __future__ import annotations

from pathlib import Path

COLUMNS = ("method", "MAT", "tok/s", "× ar", "× ar-hf", "TTFT (ms)", "identical to ar")


def markdown_table(record: dict) -> str:
    """One table per sampling config."""
    env = record["environment"]
    lines = [f"Device: {env['device']}, torch {env['torch']}, transformers {env['transformers']}, "
             f"threads {env['torch_threads']}; {len(record['config']['prompts'])} prompts, "
             f"{record['config']['max_new_tokens']} new tokens.", ""]
    for result in record["results"]:
        lines += [f"**{result['name']}**", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        for row in result["methods"]:
            ttft = row["ttft_median_seconds"]
            same = row["identical_rate"]
            lines.append("| " + " | ".join([
                row["method"], f"{row['mat']:.2f}", f"{row['tokens_per_second']:.1f}",
                _fmt(row["speedup_vs_ar"]), _fmt(row["speedup_vs_ar_hf"]),
                "–" if ttft is None else f"{ttft * 1000:.0f}",
                "–" if same is None else f"{same:.0%}",
            ]) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def plot(record: dict, out_dir: Path) -> list[Path]:
    """speedup.png (tokens/s relative to ar-hf or ar) and tokens_per_call.png; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    results = record["results"]
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        rows = result["methods"]
        base = "speedup_vs_ar_hf" if any(r["speedup_vs_ar_hf"] for r in rows) else "speedup_vs_ar"
        ax.bar([r["method"] for r in rows], [r[base] or 0 for r in rows], color="tab:blue")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(result["name"], fontsize=9)
        ax.set_ylabel("speedup vs " + ("ar-hf" if base.endswith("hf") else "ar"))
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    speedup = out_dir / "speedup.png"
    fig.savefig(speedup, dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        for row in result["methods"]:
            hist = {int(k): v for k, v in row["tokens_per_call_histogram"].items()}
            if not hist or row["method"] == "ar":
                continue
            total = sum(hist.values())
            xs = sorted(hist)
            ax.plot(xs, [hist[x] / total for x in xs], marker="o", label=row["method"])
        ax.set_xlabel("tokens per teacher call")
        ax.set_ylabel("fraction of calls")
        ax.set_title(result["name"], fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    hist = out_dir / "tokens_per_call.png"
    fig.savefig(hist, dpi=120)
    plt.close(fig)
    return [speedup, hist]
