"""The Report: utility, epsilon, attack success and cost side by side, in JSON, Markdown and a terminal table.

A :class:`Report` is frozen. Every epsilon in it comes from an accountant's ``to_dict()``, which
carries the ledger of events and every parameter the accountant used, so a reader can recompute it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunSummary", "Report", "OutputExistsError", "package_versions", "config_hash", "prepare_out_dir"]


class OutputExistsError(FileExistsError):
    """The output directory already holds a report and overwriting was not asked for."""


_VERSION_OF = ("ppml", "torch", "numpy", "scipy", "scikit-learn", "dp-accounting", "pydantic", "typer")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSION_OF:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - editable installs always have it
            out[name] = "not installed"
    return out


def _jsonify(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonify(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonify(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonify(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else ("inf" if f > 0 else "-inf" if f < 0 else "nan")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a resolved config (first 16 hex digits)."""
    blob = json.dumps(_jsonify(config), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class RunSummary:
    """One trained model and what was measured on it.

    ``utility`` (e.g. ``test_accuracy``), ``privacy`` (an accountant's ``to_dict()`` or ``None``
    for a non-private run), ``attacks`` (``AttackResult.to_dict()`` entries), ``cost`` (wall time,
    bytes), ``history`` (per-round metrics) and ``config`` (the resolved run settings).
    """

    name: str
    description: str = ""
    utility: dict[str, float] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    attacks: tuple[dict[str, Any], ...] = ()
    cost: dict[str, float] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()
    config: dict[str, Any] = field(default_factory=dict)

    def attack_metric(self, attack: str, metric: str) -> float | None:
        for a in self.attacks:
            if a.get("attack") == attack and metric in a.get("metrics", {}):
                return float(a["metrics"][metric])
        return None

    @property
    def epsilon(self) -> float:
        if self.privacy is None:
            return math.inf
        return float(self.privacy["epsilon"])

    def to_dict(self) -> dict[str, Any]:
        return _jsonify(
            {
                "name": self.name,
                "description": self.description,
                "utility": self.utility,
                "privacy": self.privacy,
                "attacks": list(self.attacks),
                "cost": self.cost,
                "history": list(self.history),
                "config": self.config,
            }
        )


def _fmt_eps(run: RunSummary) -> str:
    if run.privacy is None:
        return "inf"
    return f"{run.epsilon:.2f}"


def _fmt_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)  # pragma: no cover


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


@dataclass(frozen=True)
class Report:
    """The whole story of one command: runs side by side, plus findings that are not per-run.

    Parameters
    ----------
    title : str
    runs : tuple of RunSummary
    findings : dict
        Facts that stand beside the table (e.g. the central-collection risk).
    config : dict
        The resolved configuration of the command.
    seed : int
    membership_attack : str
        Which attack's metrics fill the table's membership columns.
    """

    title: str
    runs: tuple[RunSummary, ...]
    config: dict[str, Any]
    seed: int
    findings: dict[str, Any] = field(default_factory=dict)
    membership_attack: str = "loss-threshold"
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    def to_dict(self) -> dict[str, Any]:
        return _jsonify(
            {
                "title": self.title,
                "created": self.created,
                "seed": self.seed,
                "config_hash": self.config_hash,
                "config": self.config,
                "versions": self.versions,
                "findings": self.findings,
                "runs": [r.to_dict() for r in self.runs],
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    # ---- the side-by-side table -------------------------------------------------------------
    COLUMNS = (
        "Run",
        "Test acc.",
        "Epsilon",
        "MIA AUC",
        "TPR@1%FPR",
        "AUC/owner",
        "Up/client",
        "Time",
    )
    """Membership columns: the record-level attack's AUC and TPR at 1% FPR, then the same attack
    aggregated per owner (was this vehicle in training?), the unit of user-level DP."""

    def rows(self) -> list[list[str]]:
        out = []
        a = self.membership_attack
        for r in self.runs:
            out.append(
                [
                    r.name,
                    _fmt(r.utility.get("test_accuracy")),
                    _fmt_eps(r),
                    _fmt(r.attack_metric(a, "auc")),
                    _fmt(r.attack_metric(a, "tpr_at_1pct_fpr")),
                    _fmt(r.attack_metric(f"{a} (per owner)", "auc")),
                    _fmt_bytes(r.cost.get("bytes_up_per_client")),
                    f"{r.cost.get('wall_time_s', float('nan')):.1f} s",
                ]
            )
        return out

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        lines.append("| " + " | ".join(self.COLUMNS) + " |")
        lines.append("|" + "|".join("---" for _ in self.COLUMNS) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows()]
        lines.append("")
        lines.append(self.table_caption())
        lines.append("")
        for key, value in self.findings.items():
            if isinstance(value, dict) and "text" in value:
                lines.append(f"- **{key}**: {value['text']}")
        lines.append("")
        lines.append("## Privacy accounting")
        lines.append("")
        for r in self.runs:
            if r.privacy is None:
                lines.append(f"- {r.name}: no differential privacy (epsilon is infinite).")
                continue
            p = r.privacy
            if p.get("mechanism") == "PATE":
                lines.append(
                    f"- {r.name}: PATE, {p.get('n_teachers')} teachers, {p.get('aggregator', {}).get('name')}; "
                    f"{p.get('answered')} of {p.get('queries')} queries answered; epsilon data-independent "
                    f"{r.epsilon:.3f}, data-dependent released through smooth sensitivity "
                    f"{p.get('epsilon_data_dependent_released')} at delta = {p['delta']:g}."
                )
                continue
            params = p["ledger"][-1]["params"] if p.get("ledger") else {}
            steps = sum(int(e.get("count", 1)) for e in p.get("ledger", []))
            lines.append(
                f"- {r.name}: epsilon = {r.epsilon:.3f} at delta = {p['delta']:g} "
                f"({p['accountant'].upper()} accountant, {p.get('conversion', '')}); "
                f"{steps} composed events; sampling rate {params.get('sampling_rate')}, "
                f"noise multiplier {params.get('noise_multiplier')}, "
                f"clip norm {params.get('clip_norm')}, sampling {params.get('sampling')}."
            )
        lines.append("")
        lines.append(
            f"Seed {self.seed}; config hash `{self.config_hash}`; "
            + ", ".join(f"{k} {v}" for k, v in self.versions.items())
            + "."
        )
        lines.append("")
        return "\n".join(lines)

    def table_caption(self) -> str:
        """What the columns mean, with each private run's delta (epsilon alone is not a guarantee)."""
        deltas = sorted({f"{r.privacy['delta']:g}" for r in self.runs if r.privacy is not None})
        delta = f" at delta = {', '.join(deltas)}" if deltas else ""
        return (
            f"Epsilon per privacy unit{delta} (inf: no DP guarantee). MIA: loss-threshold attack per record "
            "(AUC, TPR at 1% FPR) and per owner (AUC/owner: was this owner in training?). "
            "Up/client: bytes uploaded per client."
        )

    def rich_table(self):  # -> rich.table.Table
        from rich.table import Table

        table = Table(title=self.title, show_lines=False, caption=self.table_caption())
        for i, c in enumerate(self.COLUMNS):
            table.add_column(c, justify="left" if i == 0 else "right")
        for row in self.rows():
            table.add_row(*row)
        return table

    # ---- writing -----------------------------------------------------------------------------
    def write(self, out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and ``metrics.csv`` into ``out_dir`` atomically.

        Refuses (``OutputExistsError``) when ``out_dir`` already holds a report, unless
        ``overwrite``. Files are written to temporaries and renamed, so an interrupted write never
        leaves a half-written report in place of a good one.
        """
        out = prepare_out_dir(out_dir, overwrite=overwrite)
        paths = {"json": out / "report.json", "markdown": out / "report.md", "csv": out / "metrics.csv"}
        _atomic_write(paths["json"], self.to_json() + "\n")
        _atomic_write(paths["markdown"], self.to_markdown())
        _atomic_write(paths["csv"], self.history_csv())
        return paths

    def history_csv(self) -> str:
        """Per-round (or per-epoch) metrics of every run as CSV, one row per run and round."""
        import csv
        import io

        rows = [
            {"run": r.name, **{k: v for k, v in h.items() if not isinstance(v, dict)}}
            for r in self.runs
            for h in r.history
        ]
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns or ["run"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()


def prepare_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Create ``out_dir`` (and parents); refuse one that already holds a report unless ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} exists and is not a directory.")
    if (out / "report.json").exists() and not overwrite:
        raise OutputExistsError(
            f"--out {out} already holds a report (report.json); choose another directory or pass "
            "--overwrite to replace it."
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
