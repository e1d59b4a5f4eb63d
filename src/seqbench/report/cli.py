"""``seqbench-report``'s command line: arguments, then query -> files -> summary run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlflow.exceptions import MlflowException

from seqbench.config.store import DEFAULT_URI_HELP, default_tracking_uri, redact_text
from seqbench.report import registry
from seqbench.report.core import DEFAULT_GROUP_BY, DEFAULT_METRIC, Reference, ReportError
from seqbench.report.datasets import build_datasets_table, default_name
from seqbench.report.output import (
    default_out_dir,
    log_summary_run,
    write_datasets_outputs,
    write_outputs,
)
from seqbench.report.query import build_table
from seqbench.report.ranking import POSTHOC_TESTS
from seqbench.report.reference import (
    DATASETS_REFERENCE,
    is_dataset_reference,
    load_dataset_reference,
    load_reference,
    resolve_reference_path,
)
from seqbench.report.render import pruned_note
from seqbench.report.selection import Selection, open_client
from seqbench.run.heartbeat import DEFAULT_STALE_AFTER

EXIT_USER_ERROR = 2  # as seqbench-train and seqbench-predict (docs/exit-codes.md)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="seqbench-report",
        description="Paper-style comparison table (Markdown to stdout; CSV, LaTeX and a curves "
        "figure to --out) from an experiment's MLflow runs, logged as a summary run too; with "
        "--experiments, one table of models x datasets ranked across the datasets.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="MLflow experiment name (e.g. imdb)")
    which.add_argument(
        "--experiments",
        metavar="A,B,C",
        help="several experiments, one per dataset: a models x datasets table with average "
        "ranks, Friedman's test, pairwise tests and cd_diagram.png",
    )
    parser.add_argument(
        "--posthoc",
        choices=POSTHOC_TESTS,
        default="nemenyi",
        help="with --experiments: the pairwise test across datasets (default: nemenyi; "
        "wilcoxon: signed-rank with Holm's correction, for 7 or more datasets)",
    )
    sweep = parser.add_mutually_exclusive_group()
    sweep.add_argument("--sweep-id", help="only runs of this multirun (tag sweep_id)")
    sweep.add_argument(
        "--latest-sweep",
        action="store_true",
        help="only runs of the most recently started sweep (matching --filter)",
    )
    parser.add_argument(
        "--filter",
        dest="filter_string",
        help="extra MLflow search filter, e.g. \"params.data.padding = 'pre'\"",
    )
    parser.add_argument(
        "--group-by",
        default=",".join(DEFAULT_GROUP_BY),
        help="comma-separated keys: params (model.arch, data.padding) or tags (model); "
        "prefix params./tags. to disambiguate (default: model)",
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help="rank the groups by this logged metric, e.g. test/f1 (macro-F1 for many classes), "
        "shown beside test accuracy (default: test/acc)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="ROW",
        help="compare every row with this one (e.g. lstm; 'lstm / 2' with two grouping keys): "
        "difference of mean test accuracy and Welch's two-sided t-test over seeds",
    )
    parser.add_argument(
        "--reference",
        nargs="?",
        const="",
        default=None,
        metavar="YAML",
        help="add published figures; without a value, the bundled conf/reference/published.yaml "
        "(with --experiments: conf/reference/ucr_published.yaml, figures per dataset)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow tracking URI (default: {DEFAULT_URI_HELP})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <project>/outputs/reports/<experiment>[/<sweep id>])",
    )
    parser.add_argument(
        "--no-summary-run", action="store_true", help="do not log the report as an MLflow run"
    )
    parser.add_argument(
        "--register",
        metavar="NAME",
        help="register the best run by validation accuracy (val/acc_best, never test) as a new "
        "version of model NAME with the alias champion",
    )
    parser.add_argument(
        "--include-pruned",
        action="store_true",
        help="list the runs Optuna's pruner stopped early (tag seqbench.pruned) under 'Not "
        "included', with why, instead of only counting them",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER,
        metavar="SECONDS",
        help="a RUNNING run on another host without a heartbeat for this long is listed as stale "
        f"(default {DEFAULT_STALE_AFTER:.0f}; on this host a run is stale once its process is gone)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: 0 on success, 2 with a one-line message for user errors."""
    args = parse_args(argv)
    try:
        if args.experiments is not None:
            return _main_datasets(args)
        reference = _single_reference(args.reference, args.experiment)
        client = open_client(args.tracking_uri or default_tracking_uri())
        selection = Selection.from_namespace(args).as_kwargs()
        report = build_table(client, args.experiment, baseline=args.baseline, **selection)
        out = args.out or default_out_dir(report.experiment, report.sweep_id)
        files = write_outputs(report, out, reference)
        markdown = files["table.md"].read_text(encoding="utf-8")
        print(markdown, end="", flush=True)
        _say_pruned(report.pruned)
        print(f"seqbench-report: wrote {', '.join(files)} to {out}", file=sys.stderr)
        if not args.no_summary_run:
            _summary_run(client, report, files, markdown)
        registry.after_report(client, report, args.register, files["table.md"])
    except ReportError as exc:
        print(f"seqbench-report: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MlflowException as exc:
        print(f"seqbench-report: error: MLflow: {redact_text(exc.message)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def _single_reference(path: str | None, experiment: str) -> list[Reference]:
    """``--reference`` for one experiment: a table's figures, or a per-dataset file's figures
    for this experiment's dataset."""
    if path is None:
        return []
    resolved = resolve_reference_path(path or None)
    if is_dataset_reference(resolved):
        rows = (r.for_dataset(experiment) for r in load_dataset_reference(resolved))
        return [r for r in rows if r is not None]
    return load_reference(resolved)


def _main_datasets(args: argparse.Namespace) -> int:
    """``--experiments A,B,C``: the cross-dataset table, files to --out, Markdown to stdout."""
    unsupported = [
        flag
        for flag, value in (("--baseline", args.baseline), ("--register", args.register))
        if value
    ]
    if unsupported:
        raise ReportError(
            f"{' and '.join(unsupported)} work on one experiment's table; drop "
            f"{'them' if len(unsupported) > 1 else 'it'} or use --experiment"
        )
    reference = []
    if args.reference is not None:
        path = resolve_reference_path(args.reference or None, DATASETS_REFERENCE)
        if not is_dataset_reference(path):
            raise ReportError(
                f"reference file {path} gives one table's figures; --experiments needs figures "
                "per dataset (test_acc: {dataset: fraction}), e.g. conf/reference/ucr_published.yaml"
            )
        reference = load_dataset_reference(path)
    client = open_client(args.tracking_uri or default_tracking_uri())
    selection = Selection.from_namespace(args).as_kwargs()
    report = build_datasets_table(client, args.experiments, posthoc=args.posthoc, **selection)
    out = args.out or default_out_dir(default_name(report.experiments), report.sweep_id)
    files = write_datasets_outputs(report, out, reference)
    print(files["table.md"].read_text(encoding="utf-8"), end="", flush=True)
    _say_pruned(sum(r.pruned for r in report.reports))
    print(f"seqbench-report: wrote {', '.join(files)} to {out}", file=sys.stderr)
    return 0


def _say_pruned(pruned: int) -> None:
    if pruned:
        print(f"seqbench-report: {pruned_note(pruned)}", file=sys.stderr)


def _summary_run(client, report, files: dict[str, Path], markdown: str) -> None:
    """Log the summary run; a reader of a team server (no EDIT permission on the experiment)
    still gets the table, with a note instead of the run (nothing is written)."""
    try:
        run_id = log_summary_run(client, report, files, markdown)
    except MlflowException as exc:
        if exc.error_code != "PERMISSION_DENIED":
            raise
        print(
            f"seqbench-report: note: no summary run: this user may read experiment "
            f"{report.experiment!r} but not write to it (ask the server's admin for EDIT, or pass "
            "--no-summary-run)",
            file=sys.stderr,
        )
        return
    print(
        f"seqbench-report: summary run report-{report.sweep_id or 'all'} ({run_id}) in "
        f"experiment {report.experiment!r}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
