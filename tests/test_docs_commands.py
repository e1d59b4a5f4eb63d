"""Every ``seqbench-train`` command in README.md and docs/*.md composes, so the docs cannot drift
from the configs: a renamed key, group or choice turns the command's test red, named by file:line.

What counts as a command: a line in a fenced code block, or an inline code span, that contains
``seqbench-train`` (or ``python -m seqbench.train``); a fenced line ending in ``\\`` continues on
the next line. Everything from that word on is the command; a shell comment, a pipe or ``&&``
ends it. A span that is only the word (``seqbench-train`` as a name in prose) is not a command.
``make`` lines and the other tools are out of scope.

How a command is checked: its overrides go through Hydra's compose API in process, which is what
``seqbench-train ... --cfg job`` does before it prints (``test_the_cli_agrees_with_compose``
checks that on one command). The hydra node is composed too, so ``hydra.*`` overrides count.
Options: ``-m``/``--multirun``, ``--cfg``/``-c`` with its value, ``--help``, ``--hydra-help``,
``--resolve`` and ``--info``; any other option is an error. In a multirun, a sweep composes with
its first value (``seed=1,2,3`` as ``seed=1``, ``range(1,11)`` as 1, ``interval(a,b)`` as a), as
the sweeper's first job would; a sweep in a command without ``-m`` is an error, as in Hydra.

Placeholders in documented values are substituted, never skipped (``PLACEHOLDERS``): a value
that is only ``...`` (``data.archive=...``) or only ``N`` (``batch_split=N``), and any
``<...>`` (``resume=<run id>``), become a concrete value of the same kind; a bare ``...`` token
("and so on", ``seqbench-train -m experiment=paper_table model=lstm ...``) is left out.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from seqbench.config.paths import config_dir, register_resolvers

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ENTRY = re.compile(r"(?:^|(?<=[\s|;&(]))(seqbench-train|python -m seqbench\.train)(?=\s|$)")
SHELL_ENDS = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&"}
FLAGS = {"--help", "-h", "--hydra-help", "--resolve", "--info"}
# Documented placeholder values -> what the check composes instead.
PLACEHOLDERS = {"...": "/path/to/data", "N": "2"}
ANGLE = re.compile(r"<[^<>]+>")

register_resolvers()


@dataclass(frozen=True)
class DocCommand:
    where: str  # "docs/cluster.md:12": the file and the line the command starts on
    text: str  # from "seqbench-train" on, continuation lines joined


def _from_entry(text: str) -> str | None:
    match = ENTRY.search(text)
    return text[match.start(1) :].strip() if match else None


def _fenced(lines: list[str], name: str) -> Iterator[DocCommand]:
    fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fence = not fence
        elif fence:
            start, joined = i, line.rstrip()
            while joined.endswith("\\") and i + 1 < len(lines):
                i += 1
                joined = joined[:-1].rstrip() + " " + lines[i].strip()
            if (command := _from_entry(joined)) is not None:
                yield DocCommand(f"{name}:{start + 1}", command)
        i += 1


def _inline(lines: list[str], name: str) -> Iterator[DocCommand]:
    """Code spans in prose; a span may wrap onto the next line of its paragraph."""
    fence = False
    paragraph: list[tuple[int, str]] = []

    def spans() -> Iterator[DocCommand]:
        text = "\n".join(line for _, line in paragraph)
        for match in re.finditer(r"`([^`]+)`", text):
            command = _from_entry(" ".join(match.group(1).split()))
            if command is None or command == ENTRY.search(command).group(1):
                continue  # not a command, or only the name
            lineno = paragraph[text.count("\n", 0, match.start())][0]
            yield DocCommand(f"{name}:{lineno + 1}", command)

    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fence = not fence
            yield from spans()
            paragraph = []
        elif fence:
            continue
        elif not line.strip():
            yield from spans()
            paragraph = []
        else:
            paragraph.append((i, line))
    yield from spans()


def commands_in(text: str, name: str) -> list[DocCommand]:
    """Every ``seqbench-train`` command of one Markdown document, in line order."""
    lines = text.splitlines()
    found = [*_fenced(lines, name), *_inline(lines, name)]
    return sorted(found, key=lambda c: int(c.where.rsplit(":", 1)[1]))


def _substitute(token: str) -> str:
    key, eq, value = token.partition("=")
    if not eq:
        return token
    value = PLACEHOLDERS.get(value, value)
    return f"{key}={ANGLE.sub('placeholder', value)}"


def overrides_of(command: str) -> tuple[list[str], bool]:
    """The Hydra overrides of a documented command and whether it is a multirun (``-m``)."""
    rest = ENTRY.match(command)
    assert rest is not None, f"not a seqbench-train command: {command}"
    tokens = shlex.split(command[rest.end() :], comments=True)
    overrides: list[str] = []
    multirun = False
    words = iter(tokens)
    for token in words:
        if token in SHELL_ENDS:
            break
        if token in ("-m", "--multirun"):
            multirun = True
        elif token in ("--cfg", "-c"):
            if (value := next(words, None)) not in ("job", "hydra", "all"):
                raise ValueError(f"{token} takes job, hydra or all, not {value!r}")
        elif token in FLAGS or token == "...":  # "...": the rest of the command left out
            continue
        elif token.startswith("-"):
            raise ValueError(f"seqbench-train has no option {token}")
        else:
            overrides.append(_substitute(token))
    return overrides, multirun


def first_job(overrides: list[str]) -> list[str]:
    """A multirun's overrides with every sweep at its first value (the sweeper's first job)."""
    out = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            out.append(override.input_line)
        elif override.is_interval_sweep():
            out.append(f"{override.get_key_element()}={override.value().start}")
        else:
            value = next(iter(override.sweep_string_iterator()))
            out.append(f"{override.get_key_element()}={value}")
    return out


def check_command(command: str) -> None:
    """Compose the command's config as ``seqbench-train ... --cfg job`` would; raises
    ``ConfigCompositionException`` (or ``ValueError`` for a bad option) when it does not."""
    overrides, multirun = overrides_of(command)
    if multirun:
        overrides = first_job(overrides)
    compose("train", overrides=overrides, return_hydra_config=True)


DOC_COMMANDS = [
    command
    for path in DOC_FILES
    for command in commands_in(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
]


@pytest.fixture(scope="module")
def hydra_context() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        yield


@pytest.mark.parametrize("command", DOC_COMMANDS, ids=[c.where for c in DOC_COMMANDS])
def test_documented_command_composes(command: DocCommand, hydra_context: None) -> None:
    try:
        check_command(command.text)
    except (ConfigCompositionException, ValueError) as exc:
        pytest.fail(f"{command.where}: `{command.text}` does not compose:\n{exc}")


def test_the_docs_hold_the_commands_this_test_is_for() -> None:
    """Guards the extractor itself: an extractor that finds nothing would pass every doc."""
    where = {c.where.split(":")[0] for c in DOC_COMMANDS}
    assert {"README.md", "docs/your-data.md", "docs/cluster.md", "docs/debugging.md"} <= where
    assert len(DOC_COMMANDS) >= 30
    texts = {c.text for c in DOC_COMMANDS}
    # a continued fenced line, joined; and a code span that wraps in its paragraph
    assert any(
        t.startswith("seqbench-train -m hydra/launcher=slurm") and "seed=1,2,3" in t for t in texts
    )
    assert any(t.startswith("seqbench-train -m seed=1,2 trainer=ddp") for t in texts)


def test_a_misspelt_key_does_not_compose(hydra_context: None) -> None:
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        check_command("seqbench-train trainer.max_epoch=3")


def test_a_misspelt_choice_in_a_multirun_sweep_does_not_compose(hydra_context: None) -> None:
    check_command("seqbench-train -m model=lstm,bilstm seed=1,2")
    with pytest.raises(ConfigCompositionException, match="lstmm"):
        check_command("seqbench-train -m model=lstmm,bilstm seed=1,2")


def test_a_sweep_without_multirun_and_an_unknown_option_are_errors(hydra_context: None) -> None:
    with pytest.raises(ConfigCompositionException, match="Ambiguous"):
        check_command("seqbench-train model=lstm,bilstm")
    with pytest.raises(ValueError, match="--epochs"):
        check_command("seqbench-train --epochs 3")


def test_a_misspelt_command_in_a_document_is_found_and_fails(hydra_context: None) -> None:
    """End to end on a small document: a fenced command continued over two lines, then a code
    span in prose, each with one misspelt key."""
    doc = (
        "Train:\n\n```bash\nsource .venv/bin/activate\n"
        "seqbench-train -m model=lstm,bilstm \\\n    trainer.max_epoch=3   # three epochs\n```\n\n"
        "Or one run, `seqbench-train data=synthetic\ndata.n_trains=10`, in seconds.\n"
    )
    found = commands_in(doc, "doc.md")
    assert [c.where for c in found] == ["doc.md:5", "doc.md:9"]
    assert (
        found[0].text == "seqbench-train -m model=lstm,bilstm trainer.max_epoch=3   # three epochs"
    )
    assert found[1].text == "seqbench-train data=synthetic data.n_trains=10"
    for command in found:
        with pytest.raises(ConfigCompositionException):
            check_command(command.text)


def test_placeholders_and_quoted_sweeps_are_substituted() -> None:
    overrides, multirun = overrides_of(
        "seqbench-train -m data.archive=... batch_split=N resume='<run id>' 'seed=range(1,11)'"
    )
    assert multirun
    assert first_job(overrides) == [
        "data.archive=/path/to/data",
        "batch_split=2",
        "resume=placeholder",
        "seed=1",
    ]


def test_the_cli_agrees_with_compose(hydra_context: None, tmp_path: Path) -> None:
    """``seqbench-train ... --cfg job`` prints the config this test composes, for a README
    command (one subprocess: the console script and the in-process check are the same thing)."""
    command = "seqbench-train model=cnn_lstm seed=2 trainer=gpu trainer.precision=bf16-mixed"
    assert command in {c.text.split("  #")[0].strip() for c in DOC_COMMANDS}
    overrides, _ = overrides_of(command)
    printed = subprocess.run(
        [sys.executable, "-m", "seqbench.train", *overrides, "--cfg", "job"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    composed = OmegaConf.to_yaml(compose("train", overrides=overrides))
    assert printed.stdout.strip() == composed.strip()
