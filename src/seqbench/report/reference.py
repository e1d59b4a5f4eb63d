"""Published reference figures (``--reference``): loaded from YAML, shown beside measured rows."""

from __future__ import annotations

from pathlib import Path

import yaml

from seqbench.config.paths import config_dir, project_root
from seqbench.report.core import Reference, ReportError


def resolve_reference_path(path: str | Path | None) -> Path:
    """``None`` means the bundled ``conf/reference/published.yaml``; a relative path is tried
    against the working directory, then the project root (so ``make`` and any folder both work)."""
    if path is None:
        return config_dir() / "reference" / "published.yaml"
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    rooted = project_root() / candidate
    return rooted if rooted.exists() else candidate


def load_reference(path: str | Path) -> list[Reference]:
    """Published figures from a YAML list of ``{name, arch, test_acc, source}`` and an optional
    ``data`` (what the published model was trained on, so readers compare like with like);
    ``test_acc`` is a fraction in [0, 1], like MLflow's ``test/acc`` (a percentage is rejected,
    not guessed)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"reference file {path} does not exist")
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"reference file {path} is not valid YAML: {exc}") from exc
    if not isinstance(entries, list):
        raise ReportError(
            f"reference file {path} must be a YAML list of {{name, arch, test_acc, source}}"
        )
    fields = {"name", "arch", "test_acc", "source"}
    optional = {"data"}
    rows = []
    for i, entry in enumerate(entries):
        where = f"{path} entry {i + 1}"
        if not isinstance(entry, dict) or not fields <= set(entry) <= fields | optional:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ReportError(
                f"{where}: expected exactly the keys {sorted(fields)} (optional: "
                f"{', '.join(sorted(optional))}), got {got}"
            )
        acc = entry["test_acc"]
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
            hint = (
                f" (looks like a percentage; write {acc / 100:.4f})"
                if isinstance(acc, int | float)
                else ""
            )
            raise ReportError(f"{where}: test_acc must be a fraction in [0, 1], got {acc!r}{hint}")
        arch = entry["arch"]
        rows.append(
            Reference(
                str(entry["name"]),
                None if arch is None else str(arch),
                float(acc),
                str(entry["source"]),
                str(entry.get("data") or ""),
            )
        )
    return rows
