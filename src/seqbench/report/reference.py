"""Published reference figures (``--reference``): loaded from YAML, shown beside measured rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from seqbench.config.paths import config_dir, project_root
from seqbench.report.core import Reference, ReportError

DEFAULT_REFERENCE = "published.yaml"  # IMDB, for one experiment's table
DATASETS_REFERENCE = "ucr_published.yaml"  # per dataset, for --experiments


def resolve_reference_path(path: str | Path | None, default: str = DEFAULT_REFERENCE) -> Path:
    """``None`` means the bundled ``conf/reference/<default>``; a relative path is tried
    against the working directory, then the project root (so ``make`` and any folder both work)."""
    if path is None:
        return config_dir() / "reference" / default
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    rooted = project_root() / candidate
    return rooted if rooted.exists() else candidate


def _entries(path: str | Path, shape: str) -> tuple[Path, list]:
    """The YAML list in ``path`` (``shape`` says what an entry looks like, for the error)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"reference file {path} does not exist")
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"reference file {path} is not valid YAML: {exc}") from exc
    if not isinstance(entries, list):
        raise ReportError(f"reference file {path} must be a YAML list of {shape}")
    return path, entries


def _check_keys(entry: object, where: str, fields: set[str], optional: set[str]) -> dict:
    if not isinstance(entry, dict) or not fields <= set(entry) <= fields | optional:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ReportError(
            f"{where}: expected exactly the keys {sorted(fields)} (optional: "
            f"{', '.join(sorted(optional))}), got {got}"
        )
    return entry


def _fraction(acc: object, where: str) -> float:
    """A test accuracy as a fraction in [0, 1]; a percentage is rejected, not guessed."""
    if isinstance(acc, bool) or not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
        hint = (
            f" (looks like a percentage; write {acc / 100:.4f})"
            if isinstance(acc, int | float)
            else ""
        )
        raise ReportError(f"{where}: test_acc must be a fraction in [0, 1], got {acc!r}{hint}")
    return float(acc)


def _arch(entry: dict) -> str | None:
    arch = entry.get("arch")
    return None if arch is None else str(arch)


def load_reference(path: str | Path) -> list[Reference]:
    """Published figures from a YAML list of ``{name, arch, test_acc, source}`` and an optional
    ``data`` (what the published model was trained on, so readers compare like with like);
    ``test_acc`` is a fraction in [0, 1], like MLflow's ``test/acc`` (a percentage is rejected,
    not guessed)."""
    path, entries = _entries(path, "{name, arch, test_acc, source}")
    fields = {"name", "arch", "test_acc", "source"}
    rows = []
    for i, entry in enumerate(entries):
        where = f"{path} entry {i + 1}"
        entry = _check_keys(entry, where, fields, {"data"})
        rows.append(
            Reference(
                str(entry["name"]),
                _arch(entry),
                _fraction(entry["test_acc"], where),
                str(entry["source"]),
                str(entry.get("data") or ""),
            )
        )
    return rows


@dataclass(frozen=True)
class DatasetReference:
    """A published model's test accuracy on several datasets (one row of the cross-dataset
    table), with its source and a note on the protocol (e.g. epochs chosen on the test set)."""

    name: str
    arch: str | None
    source: str
    test_acc: dict[str, float]  # dataset (experiment) name -> fraction in [0, 1]
    data: str = ""
    note: str = ""

    def for_dataset(self, dataset: str) -> Reference | None:
        """This model's row for a single-dataset table, or None when it has no figure there."""
        if dataset not in self.test_acc:
            return None
        detail = "; ".join(x for x in (self.data, self.note) if x)
        return Reference(self.name, self.arch, self.test_acc[dataset], self.source, detail)


def is_dataset_reference(path: str | Path) -> bool:
    """Whether ``path`` holds per-dataset figures (``test_acc`` a mapping) rather than one table's."""
    _, entries = _entries(path, "entries")
    return any(isinstance(e, dict) and isinstance(e.get("test_acc"), dict) for e in entries)


def load_dataset_reference(path: str | Path) -> list[DatasetReference]:
    """Published figures per dataset from a YAML list of ``{name, source, test_acc: {dataset:
    fraction}}`` with optional ``arch``, ``data`` and ``note``; dataset names are experiment
    names as given to ``--experiments``."""
    path, entries = _entries(path, "{name, source, test_acc: {dataset: fraction}}")
    rows = []
    for i, entry in enumerate(entries):
        where = f"{path} entry {i + 1}"
        entry = _check_keys(entry, where, {"name", "source", "test_acc"}, {"arch", "data", "note"})
        accs = entry["test_acc"]
        if not isinstance(accs, dict) or not accs:
            raise ReportError(
                f"{where}: test_acc must map dataset names to fractions, e.g. "
                f"{{GunPoint: 0.99}}, got {accs!r}"
            )
        rows.append(
            DatasetReference(
                str(entry["name"]),
                _arch(entry),
                str(entry["source"]),
                {str(k): _fraction(v, f"{where}, {k}") for k, v in accs.items()},
                str(entry.get("data") or ""),
                " ".join(str(entry.get("note") or "").split()),
            )
        )
    return rows
