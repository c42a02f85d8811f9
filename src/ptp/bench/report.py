"""Benchmark outputs: the Markdown table and the PNG plots (speedup bars, tokens-per-call histogram)."""

from __future__ import annotations

from pathlib import Path

COLUMNS = ("method", "weights", "MAT", "tok/s", "× ar", "× ar-hf", "TTFT (ms)", "identical to ar")


def markdown_table(record: dict) -> str:
    """One table per sampling config, each followed by a per-category table when the prompts have
    categories (Spec-Bench)."""
    env, cfg = record["environment"], record["config"]
    source = cfg.get("prompt_source") or {}
    turns = f", up to {cfg['turns']} turns each" if cfg.get("turns", 1) > 1 else ""
    lines = [f"Device: {env['device']}, torch {env['torch']}, transformers {env['transformers']}, "
             f"threads {env['torch_threads']}; {len(cfg['prompts'])} prompts{turns}"
             + (f" from {Path(source['path']).name} ({source['format']})" if source.get("path") else "")
             + f", {cfg['max_new_tokens']} new tokens.", ""]
    if env.get("llama_cpp"):
        lcp = env["llama_cpp"]
        lines[0] = lines[0].replace(f"threads {env['torch_threads']}",
                                    f"llama-cpp-python {lcp['llama_cpp_python']}, threads {env['torch_threads']}")
        lines += [f"llama-cpp methods run {lcp['gguf']['file']} ({lcp['gguf']['type']}) through llama.cpp; ptp's and "
                  "HF's methods run the weights dequantised from it, so their outputs differ numerically and "
                  "\"identical to ar\" (greedy) measures agreement, not losslessness.", ""]
    for result in record["results"]:
        lines += [f"**{result['name']}**", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        for row in result["methods"]:
            ttft = row["ttft_median_seconds"]
            same = row["identical_rate"]
            lines.append("| " + " | ".join([
                row["method"], row.get("weights") or "–", f"{row['mat']:.2f}", f"{row['tokens_per_second']:.1f}",
                _fmt(row["speedup_vs_ar"]), _fmt(row["speedup_vs_ar_hf"]),
                "–" if ttft is None else f"{ttft * 1000:.0f}",
                "–" if same is None else f"{same:.0%}",
            ]) + " |")
        lines.append("")
        lines += category_table(result)
    return "\n".join(lines)


def category_table(result: dict) -> list[str]:
    """Rows: each category, then overall; columns: per method but ar, MAT and speedup vs ar; the identical-
    output rate (100 % when every compared method matched ``ar`` on every prompt, else the ones that did not).
    Empty when every prompt is in the one category ``all`` (a file of {id, prompt})."""
    categories = result.get("categories") or {}
    if not categories or set(categories) == {"all"}:
        return []
    methods = [r["method"] for r in result["methods"]]
    has_ar = "ar" in methods
    header = ["category", "prompts"]
    for m in methods:  # ar's MAT is 1 and its speedup vs itself 1 by construction: no columns
        header += [] if m == "ar" else [f"{m} MAT"] + ([f"{m} × ar"] if has_ar else [])
    header.append("identical to ar")
    lines = [f"**{result['name']}, per category**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    counts = result.get("prompts_per_category", {})
    table = [(c, str(counts.get(c, "")), rows) for c, rows in categories.items()]
    table.append(("**overall**", str(sum(counts.values())) if counts else "", result["methods"]))
    for name, count, rows in table:
        cells = [name, count]
        for row in rows:
            if row["method"] != "ar":
                cells += [f"{row['mat']:.2f}"] + ([_fmt(row["speedup_vs_ar"])] if has_ar else [])
        cells.append(_identical(rows))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _identical(rows: list[dict]) -> str:
    rates = {r["method"]: r["identical_rate"] for r in rows if r["identical_rate"] is not None}
    if not rates:
        return "–"
    below = [f"{m} {rate:.0%}" for m, rate in rates.items() if rate < 1]
    return ", ".join(below) if below else "100%"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def caption(record: dict) -> str:
    """The run's settings in one line, for the plots: model, prompts, tokens, device and threads."""
    env, cfg = record["environment"], record["config"]
    source = (cfg.get("prompt_source") or {}).get("path")
    prompts = f"{len(cfg['prompts'])} prompts" + (f" of {Path(source).name}" if source else "")
    return (f"{Path(cfg['model_dir']).name}: {prompts}, {cfg['max_new_tokens']} new tokens, seed {cfg['seed']}; "
            f"{env['device']}, {env['torch_threads']} thread(s), torch {env['torch']}")


def plot(record: dict, out_dir: Path) -> list[Path]:
    """speedup.png (tokens/s relative to ar-hf or ar) and tokens_per_call.png, captioned with the run's
    settings; returns the paths."""
    from ptp.extras import require

    require("bench", "matplotlib", what="plotting")
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
    _caption(fig, record)
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
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("tokens per teacher call")
        ax.set_ylabel("fraction of calls")
        ax.set_title(result["name"], fontsize=9)
        ax.legend(fontsize=7)
    _caption(fig, record)
    hist = out_dir / "tokens_per_call.png"
    fig.savefig(hist, dpi=120)
    plt.close(fig)
    return [speedup, hist]


def _caption(fig, record: dict) -> None:
    import textwrap

    text = textwrap.fill(caption(record), width=int(fig.get_figwidth() * 19))
    fig.tight_layout(rect=(0, 0.05 + 0.035 * text.count("\n"), 1, 1))
    fig.text(0.01, 0.01, text, fontsize=6, color="dimgrey")
