"""Plot a measured profile: µs vs M, one line per kernel, the bytes floor dashed.

    python tools/plot_profile.py matrix/profiles/h200-sm90.toml docs/profile-h200-sm90.png

Reads the profile TOML with the standard library (the schema of oracle/profile.py) and
needs matplotlib, which the project does not depend on (tools/ is not packaged).  The
floor is the one docs/performance.md uses: the expected number of distinct active
experts, E * (1 - (1 - k/E)^M), times one gpt-oss expert's bytes, over the copy bandwidth.
"""

from __future__ import annotations

import argparse
import tomllib
from collections import defaultdict
from pathlib import Path

#: One gpt-oss expert (MXFP4 blocks + E8M0 scales + bf16 biases) and the H200's measured
#: device-to-device copy bandwidth (docs/performance.md).
EXPERT_BYTES = 13.24e6
COPY_BYTES_PER_S = 4192e9


def floor_us(experts: int, top_k: int, tokens: int) -> float:
    active = experts * (1 - (1 - top_k / experts) ** tokens)
    return active * EXPERT_BYTES / COPY_BYTES_PER_S * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = tomllib.loads(args.profile.read_text())
    by_e: dict[int, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    top_k = 4
    for m in doc["measurement"]:
        act = "bf16" if m["activation"] == "None" else m["activation"]
        us = m.get("graph_us", m["eager_us"])
        by_e[m["experts"]][f"{m['backend']} ({act})"].append((m["tokens"], us))
        top_k = m["top_k"]
    fig, axes = plt.subplots(1, len(by_e), figsize=(6.5 * len(by_e), 4.8), squeeze=False)
    for ax, (experts, lines) in zip(axes[0], sorted(by_e.items())):
        tokens = sorted({t for pts in lines.values() for t, _ in pts})
        for label, pts in sorted(lines.items()):
            pts.sort()
            ax.plot([t for t, _ in pts], [u for _, u in pts], marker="o", label=label)
        ax.plot(tokens, [floor_us(experts, top_k, t) for t in tokens], "k--", label="bytes floor")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens per MoE call (M)")
        ax.set_ylabel("µs (CUDA graph; EMULATION eager)")
        ax.set_title(f"{doc['device']}, E = {experts}, top-{top_k}, H = I = 2880")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"measured {doc['date']}: {doc['command']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
