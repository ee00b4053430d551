"""The online replay's report: accuracy over time per arm (frozen, online, TTRL), the corridor, the buffer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pixelis.core.config import PixelisConfig

ARM_TITLES = {"frozen": "frozen (no updates)", "online": "online (trajectory vote)",
              "ttrl": "TTRL (answer-majority vote)"}


def _rate(values: Sequence[bool | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def _windows(rows: list[dict[str, Any]], size: int) -> list[float | None]:
    return [_rate([r.get("correct") for r in rows[i:i + size]]) for i in range(0, len(rows), size)]


def _kl(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _by_arm(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    arms: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    return arms


def summarize(rows: list[dict[str, Any]], updates: dict[str, list[dict[str, Any]]],
              counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Headline numbers of a replay, per arm."""
    arms = _by_arm(rows)
    out: dict[str, Any] = {"queries": len(arms["online"]), "arms": list(arms)}
    for arm, arm_rows in arms.items():
        answered = [r for r in arm_rows if r.get("error") is None]
        arm_updates = updates.get(arm, [])
        out[arm] = {
            "accuracy": _rate([r.get("correct") for r in answered]),
            "majority_accuracy": _rate([r.get("majority_correct") for r in answered]),
            "errors": len(arm_rows) - len(answered),
            "stored": sum(r.get("experience_id") is not None for r in answered),
            "mean_latency_s": sum(r.get("latency_s", 0.0) for r in answered) / max(len(answered), 1),
            "accepted": counts.get(arm, {}).get("accepted", 0),
            "rejected": counts.get(arm, {}).get("rejected", 0),
            "final_version": max((u["version"] or 0 for u in arm_updates), default=0),
        }
    return out


def _plot(path: Path, rows: list[dict[str, Any]], updates: dict[str, list[dict[str, Any]]],
          cfg: PixelisConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = cfg.online.report_window
    arms = _by_arm(rows)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for arm, arm_rows in arms.items():
        series = _windows(arm_rows, window)
        xs = [min((i + 1) * window, len(arm_rows)) for i, v in enumerate(series) if v is not None]
        ax.plot(xs, [v for v in series if v is not None], marker="o", label=ARM_TITLES.get(arm, arm))
    ax.set(title=f"accuracy per {window} queries", xlabel="queries", ylabel="accuracy", ylim=(-0.05, 1.05))
    ax.legend(fontsize=8)
    ax = axes[1]
    for arm, arm_updates in updates.items():
        for status, marker in (("accepted", "o"), ("rejected", "x")):
            chosen = [(i, u["kl"]) for i, u in enumerate(arm_updates) if u["status"] == status]
            if chosen:
                ax.scatter(*zip(*chosen), marker=marker, label=f"{arm}: {status}")
    ax.axhline(cfg.online.kl_max, color="red", linestyle="--", label=f"kl_max {cfg.online.kl_max:g}")
    ax.set(title="probe KL to the EMA per update (the corridor)", xlabel="update", ylabel="token KL")
    ax.legend(fontsize=8)
    ax = axes[2]
    twin = ax.twinx()
    for arm, arm_rows in arms.items():
        ax.plot([r.get("buffer_size", 0) for r in arm_rows], label=f"{arm}: buffer size")
        twin.plot([r.get("latency_s", 0.0) for r in arm_rows], linestyle=":", alpha=0.6, label=f"{arm}: latency")
    ax.set(title="buffer size (solid) and latency (dotted)", xlabel="query", ylabel="experiences")
    twin.set_ylabel("latency per query (s)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(online_dir: Path, rows: list[dict[str, Any]], updates: dict[str, list[dict[str, Any]]],
                 cfg: PixelisConfig, counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Write ``report.md`` and ``report.png`` into `online_dir`; returns `summarize`'s numbers."""
    summary = summarize(rows, updates, counts)
    _plot(online_dir / "report.png", rows, updates, cfg)
    arms = _by_arm(rows)
    frozen = summary["frozen"]["accuracy"]
    window = cfg.online.report_window
    lines = [
        "# Online replay (Pixel TTRL)", "",
        f"{summary['queries']} queries; {cfg.online.n_samples} trajectories sampled per query; confidence gate "
        f"{cfg.online.confidence_gate:g}; corridor kl_max {cfg.online.kl_max:g}. Every arm sees the same stream "
        "with the same seeds; labels only score the answers.", "",
        "| arm | accuracy | vs frozen | answer-majority accuracy | stored | updates accepted / rejected | "
        "final weights | bad queries | mean latency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        s = summary[arm]
        gain = "-" if s["accuracy"] is None or frozen is None or arm == "frozen" else f"{s['accuracy'] - frozen:+.1%}"
        learned = "-" if arm == "frozen" else f"{s['accepted']} / {s['rejected']}"
        lines.append(f"| {ARM_TITLES.get(arm, arm)} | {_pct(s['accuracy'])} | {gain} | "
                     f"{_pct(s['majority_accuracy'])} | {s['stored']} | {learned} | v{s['final_version']} | "
                     f"{s['errors']} | {s['mean_latency_s']:.2f} s |")
    lines += ["", "![replay](report.png)", "", f"## Accuracy per {window} queries", "",
              "| queries | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    columns = [_windows(arm_rows, window) for arm_rows in arms.values()]
    for i, values in enumerate(zip(*columns)):
        lines.append(f"| {i * window + 1}-{min((i + 1) * window, summary['queries'])} | "
                     + " | ".join(_pct(v) for v in values) + " |")
    for arm, arm_updates in updates.items():
        if not arm_updates:
            continue
        lines += ["", f"## Updates of the {arm} arm", "",
                  "| task | query | confidence | KL | status | version |", "|---|---|---|---|---|---|"]
        lines += [f"| {u['task']} | {u['query_id']} | {u['confidence']:.2f} | {_kl(u.get('kl'))} | {u['status']} | "
                  f"{u['version'] if u['version'] is not None else '-'} |" for u in arm_updates]
    (online_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary
