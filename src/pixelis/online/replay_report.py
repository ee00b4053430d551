"""The online replay's report: accuracy over time (online vs frozen vs answer majority), the corridor, the buffer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pixelis.core.config import PixelisConfig


def _rate(values: Sequence[bool | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def _windows(rows: list[dict[str, Any]], key: str, size: int) -> list[float | None]:
    return [_rate([r.get(key) for r in rows[i:i + size]]) for i in range(0, len(rows), size)]


def _kl(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summarize(rows: list[dict[str, Any]], updates: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
    """Headline numbers of a replay."""
    arms = {arm: [r for r in rows if r["arm"] == arm] for arm in ("frozen", "online")}
    out: dict[str, Any] = {"queries": len(arms["online"])}
    for arm, arm_rows in arms.items():
        answered = [r for r in arm_rows if r.get("error") is None]
        out[arm] = {
            "accuracy": _rate([r.get("correct") for r in answered]),
            "majority_accuracy": _rate([r.get("majority_correct") for r in answered]),
            "errors": len(arm_rows) - len(answered),
            "stored": sum(r.get("experience_id") is not None for r in answered),
            "mean_latency_s": sum(r.get("latency_s", 0.0) for r in answered) / max(len(answered), 1),
        }
    out["updates"] = {"accepted": counts.get("accepted", 0), "rejected": counts.get("rejected", 0),
                      "final_version": max((u["version"] or 0 for u in updates), default=0)}
    return out


def _plot(path: Path, rows: list[dict[str, Any]], updates: list[dict[str, Any]], cfg: PixelisConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = cfg.online.report_window
    online = [r for r in rows if r["arm"] == "online"]
    frozen = [r for r in rows if r["arm"] == "frozen"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for label, series in (("online (trajectory vote)", _windows(online, "correct", window)),
                          ("frozen (trajectory vote)", _windows(frozen, "correct", window)),
                          ("online, answer majority (TTRL)", _windows(online, "majority_correct", window))):
        xs = [(i + 1) * window for i, v in enumerate(series) if v is not None]
        ax.plot(xs, [v for v in series if v is not None], marker="o", label=label)
    ax.set(title=f"accuracy per {window} queries", xlabel="queries", ylabel="accuracy", ylim=(-0.05, 1.05))
    ax.legend(fontsize=8)
    ax = axes[1]
    for status, marker in (("accepted", "o"), ("rejected", "x")):
        chosen = [(i, u["kl"]) for i, u in enumerate(updates) if u["status"] == status]
        if chosen:
            ax.scatter(*zip(*chosen), marker=marker, label=status)
    ax.axhline(cfg.online.kl_max, color="red", linestyle="--", label=f"kl_max {cfg.online.kl_max:g}")
    ax.set(title="probe KL to the EMA per update (the corridor)", xlabel="update", ylabel="token KL")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot([r.get("buffer_size", 0) for r in online], label="buffer size")
    ax.set(title="buffer size and latency", xlabel="query", ylabel="experiences")
    twin = ax.twinx()
    twin.plot([r.get("latency_s", 0.0) for r in online], color="gray", alpha=0.6, label="latency (s)")
    twin.set_ylabel("latency per query (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(online_dir: Path, rows: list[dict[str, Any]], updates: list[dict[str, Any]], cfg: PixelisConfig,
                 counts: dict[str, int]) -> dict[str, Any]:
    """Write ``report.md`` and ``report.png`` into `online_dir`; returns `summarize`'s numbers."""
    summary = summarize(rows, updates, counts)
    _plot(online_dir / "report.png", rows, updates, cfg)
    online, frozen = summary["online"], summary["frozen"]
    gain = None if online["accuracy"] is None or frozen["accuracy"] is None else online["accuracy"] - frozen["accuracy"]
    window = cfg.online.report_window
    lines = [
        "# Online replay (Pixel TTRL)", "",
        f"{summary['queries']} queries; {cfg.online.n_samples} trajectories sampled per query; confidence gate "
        f"{cfg.online.confidence_gate:g}; corridor kl_max {cfg.online.kl_max:g}.", "",
        "| arm | accuracy | answer-majority accuracy | experiences stored | bad queries | mean latency |",
        "|---|---|---|---|---|---|",
        *(f"| {arm} | {_pct(s['accuracy'])} | {_pct(s['majority_accuracy'])} | {s['stored']} | {s['errors']} | "
          f"{s['mean_latency_s']:.2f} s |" for arm, s in (("frozen", frozen), ("online", online))), "",
        f"Online minus frozen accuracy: **{'-' if gain is None else f'{gain:+.1%}'}** on the same stream and seeds.",
        "",
        f"Updates: {summary['updates']['accepted']} accepted, {summary['updates']['rejected']} rejected by the "
        f"corridor; final weights v{summary['updates']['final_version']}.", "",
        "![replay](report.png)", "",
        f"## Accuracy per {window} queries", "",
        "| queries | frozen | online | online answer majority |", "|---|---|---|---|",
    ]
    arms = {arm: [r for r in rows if r["arm"] == arm] for arm in ("frozen", "online")}
    columns = [_windows(arms["frozen"], "correct", window), _windows(arms["online"], "correct", window),
               _windows(arms["online"], "majority_correct", window)]
    for i, values in enumerate(zip(*columns)):
        lines.append(f"| {i * window + 1}-{min((i + 1) * window, summary['queries'])} | "
                     + " | ".join(_pct(v) for v in values) + " |")
    if updates:
        lines += ["", "## Updates", "", "| task | query | confidence | KL | status | version |", "|---|---|---|---|---|---|"]
        lines += [f"| {u['task']} | {u['query_id']} | {u['confidence']:.2f} | {_kl(u.get('kl'))} | {u['status']} | "
                  f"{u['version'] if u['version'] is not None else '-'} |" for u in updates]
    (online_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary
