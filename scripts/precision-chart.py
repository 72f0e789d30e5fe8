#!/usr/bin/env python3
"""The chart of scripts/precision-table.sh: quality loss and speed against file size, one point
per quantization type, from the TSV the script writes (one row per type; columns named in the
header: type size_bytes pp512 tg128 ppl kld_mean ...; "-" where a value is missing).

usage: precision-chart.py RESULTS.tsv OUT.png [TITLE]

Left: mean KL divergence from the F16 base against size (log scale; F16 itself, the base, is
left out), each point labelled with its perplexity change against F16. Middle and right: pp512
and tg128 tokens/s against size.
Needs matplotlib (precision-table.sh installs it in its own venv).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")  # no display here; write the file only
import matplotlib.pyplot as plt  # noqa: E402


def num(v):
    return None if v in ("", "-", None) else float(v)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[3])
    src, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) == 4 else "precision against size"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        sys.exit(f"precision-chart: {src}: no rows")
    for r in rows:
        r["mib"] = num(r["size_bytes"]) / (1 << 20)
    base_ppl = next((num(r["ppl"]) for r in rows if r["type"] == "F16"), None)

    fig, (ax_q, ax_pp, ax_tg) = plt.subplots(1, 3, figsize=(15, 5.4))
    later = []  # labels go on once the layout is final: they are placed in pixels

    def panel(ax, key, color, ylabel, title, log=False, label=lambda r: r["type"]):
        pts = [r for r in rows if num(r[key]) is not None and (not log or num(r[key]) > 0)]
        ax.scatter([r["mib"] for r in pts], [num(r[key]) for r in pts], color=color, zorder=3)
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0, top=1.12 * max([num(r[key]) for r in pts] or [1]))
        ax.set_xlim(0, 1.3 * max(r["mib"] for r in rows))  # room for the labels on the right
        ax.set_xlabel("file size (MiB)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        later.append((ax, [(r["mib"], num(r[key]), label(r)) for r in pts]))

    def place_labels(ax, pts):
        # Many types land near one size (qwen05's fallbacks): top to bottom, push each label
        # below any label it would overlap, with a thin line back to its point.
        ax.get_xlim(), ax.get_ylim()  # settle autoscaling before reading the transform
        gap = 12
        placed = []
        for x, y, text in sorted(pts, key=lambda p: -ax.transData.transform((p[0], p[1]))[1]):
            px, py = ax.transData.transform((x, y))
            ly = py + 4
            while True:
                hit = [q for (qx, q) in placed if abs(qx - px) < 110 and abs(q - ly) < gap]
                if not hit:
                    break
                ly = min(hit) - gap
            placed.append((px, ly))
            moved = abs(ly - (py + 4)) > 1
            ax.annotate(text, (x, y), xytext=(7, ly - py), textcoords="offset pixels",
                        fontsize=8, va="center",
                        arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5) if moved else None)

    for r in rows:  # F16 is the base: no KLD of its own, and a zero on a log axis
        r["kld_plot"] = "-" if r["type"] == "F16" else r["kld_mean"]

    def with_ppl(r):  # the type, and its perplexity change against F16
        if base_ppl is None or num(r["ppl"]) is None:
            return r["type"]
        return "%s (PPL %+.2f%%)" % (r["type"], 100 * (num(r["ppl"]) / base_ppl - 1))

    panel(ax_q, "kld_plot", "tab:red", "mean KL divergence from F16 (nats, log scale)",
          "quality loss against size", log=True, label=with_ppl)
    panel(ax_pp, "pp512", "tab:green", "pp512 (tokens/s)", "prompt speed against size")
    panel(ax_tg, "tg128", "tab:purple", "tg128 (tokens/s)", "generation speed against size")

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    for ax, pts in later:
        place_labels(ax, pts)
    fig.savefig(out, dpi=110)
    print(f"precision-chart: {out}")


if __name__ == "__main__":
    main()
