"""Docs that cannot rot: every command line in README.md and docs/**/*.md that runs a script of the project
names a script or module that exists, and every --flag it gives is one that script's parser knows."""
import argparse
import glob
import importlib
import os
import re
import runpy
import shlex
import warnings
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from tests.conftest import ROOT

DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
PYTHONS = ("python", "python3")


def code_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of the lines inside code: indented blocks, fenced blocks, and inline spans that start
    with a command; a line ending in a backslash goes on with the next."""
    fenced, previous_blank, in_block = False, True, False
    pending, start = "", 0
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        indented = line.startswith("    ") and (
            bool(pending) or ((previous_blank or in_block) and not line.lstrip().startswith(("- ", "|"))))
        in_block = (indented and bool(line.strip())) or (in_block and not line.strip())
        previous_blank = not line.strip()
        if fenced or indented:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.strip()[:-1].rstrip() + " "
                continue
            yield start, pending + line.strip()
            pending = ""
            continue
        pending = ""
        for span in re.findall(r"`([^`]+)`", line):
            if span.split()[:1] and span.split()[0] in PYTHONS + ("bash", "torchrun"):
                yield number, span


def commands(line: str) -> Iterator[List[str]]:
    """The commands of a shell line, as tokens: split at &&, ||, ;, | and a # comment; [optional] brackets off."""
    line = re.sub(r"\s#\s.*$", "", " " + line).strip()
    for part in re.split(r"&&|\|\||;|\s\|\s", line):
        try:
            tokens = shlex.split(part.replace("[", " ").replace("]", " "))
        except ValueError:
            tokens = part.replace("[", " ").replace("]", " ").split()
        while tokens and re.match(r"^[A-Z_]+=", tokens[0]):          # FOO=bar python ...
            tokens = tokens[1:]
        if tokens:
            yield tokens


def target(tokens: List[str]) -> Optional[Tuple[str, str, List[str]]]:
    """(kind, name, arguments) of a project command: ('module', 'pkg.mod', args), ('script', 'train.py', args) or
    ('shell', 'quickstart.sh', args); None for any other command."""
    if tokens[0] in PYTHONS and len(tokens) > 2 and tokens[1] == "-m":
        top = tokens[2].split(".")[0]
        if os.path.isdir(os.path.join(ROOT, top)) or os.path.isfile(os.path.join(ROOT, f"{top}.py")):
            return "module", tokens[2], tokens[3:]
        return None
    if tokens[0] in PYTHONS and len(tokens) > 1 and tokens[1].endswith(".py"):
        return "script", tokens[1], tokens[2:]
    if tokens[0] == "torchrun":
        scripts = [i for i, t in enumerate(tokens) if t.endswith(".py")]
        return ("script", tokens[scripts[0]], tokens[scripts[0] + 1:]) if scripts else None
    if tokens[0] == "bash" and len(tokens) > 1 and tokens[1].endswith(".sh"):
        return "shell", tokens[1], tokens[2:]
    return None


def flags_given(args: List[str]) -> Tuple[List[str], List[str]]:
    """The --flags before a bare '--', and those after it (passed on to another script)."""
    own, rest = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])
    pick = lambda part: [a.split("=")[0] for a in part if a.startswith("--") and len(a) > 2 and "..." not in a]
    return pick(own), pick(rest)


_PARSERS: Dict[str, Set[str]] = {}


def python_flags(module: str) -> Set[str]:
    """The option strings of a project module's parser, caught as it is about to parse (nothing runs)."""
    if module in _PARSERS:
        return _PARSERS[module]

    class Caught(Exception):
        pass

    def catch(parser, *args, **kwargs):
        raise Caught(parser)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        loaded = importlib.import_module(module)
        if hasattr(loaded, "parse_args"):
            loaded.parse_args([])
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".* found in sys.modules", RuntimeWarning)
                runpy.run_module(module, run_name="__main__")
    except Caught as caught:
        parser = caught.args[0]
        _PARSERS[module] = {s for action in parser._actions for s in action.option_strings}
    finally:
        argparse.ArgumentParser.parse_args = original
    if module not in _PARSERS:
        raise AssertionError(f"{module} parsed no command line")
    return _PARSERS[module]


def shell_flags(path: str) -> Tuple[Set[str], Optional[str]]:
    """A bash script's options (its `case` patterns), and the project module it hands "$@" to, if any."""
    text = open(path).read()
    flags = {f for pattern in re.findall(r"^\s*([-\w|]+)\)", text, re.M) for f in pattern.split("|") if f.startswith("-")}
    passed = re.search(r"-m ([\w.]+)[^\n]*\"\$@\"", text)
    return flags, passed.group(1) if passed else None


def known_flags(kind: str, name: str) -> Tuple[Set[str], str]:
    """(the flags a command's target takes, where they were read); fails when the target does not exist."""
    if kind == "module":
        path = os.path.join(ROOT, *name.split(".")) + ".py"
        assert os.path.isfile(path) or os.path.isfile(os.path.join(ROOT, *name.split("."), "__main__.py")), \
            f"module {name} does not exist"
        return python_flags(name), name
    path = os.path.join(ROOT, name)
    assert os.path.isfile(path), f"{name} does not exist"
    if kind == "script":
        return python_flags(os.path.splitext(name)[0].replace(os.sep, ".")), name
    flags, module = shell_flags(path)
    return (flags | python_flags(module) if module else flags), name


def documented_commands():
    for doc in DOCS:
        for number, line in code_lines(open(doc, encoding="utf-8").read()):
            for tokens in commands(line):
                found = target(tokens)
                if found:
                    yield os.path.relpath(doc, ROOT), number, found


def test_the_docs_name_commands_at_all():
    found = list(documented_commands())
    kinds = {kind for _, _, (kind, _, _) in found}
    assert len(found) > 40 and kinds == {"module", "script", "shell"}, kinds


@pytest.mark.parametrize("doc", [os.path.relpath(d, ROOT) for d in DOCS])
def test_every_documented_command_runs_a_script_that_takes_its_flags(doc):
    wrong = []
    for where, number, (kind, name, args) in documented_commands():
        if where != doc:
            continue
        try:
            flags, source = known_flags(kind, name)
        except AssertionError as err:
            wrong.append(f"{where}:{number}: {err}")
            continue
        own, passed = flags_given(args)
        wrong += [f"{where}:{number}: {name} has no {flag}" for flag in own if flag not in flags]
        if passed and name in ("bench.lip_loss_sweep",):          # after '--': the experiment script's options
            script = os.path.join("bench", "grid_experiment.sh" if "--grid_root" in own else "experiment.sh")
            inner, _ = known_flags("shell", script)
            wrong += [f"{where}:{number}: {script} has no {flag}" for flag in passed if flag not in inner]
    assert not wrong, "\n".join(wrong)


def test_a_wrong_flag_is_caught(tmp_path):
    """The check fails on a broken flag (the test above would)."""
    line = "python train.py --file_dir LRS2 --no_such_flag 3 && bash quickstart.sh --out_dir x --grammer grid"
    wrong = []
    for tokens in commands(line):
        kind, name, args = target(tokens)
        flags, _ = known_flags(kind, name)
        wrong += [flag for flag in flags_given(args)[0] if flag not in flags]
    assert wrong == ["--no_such_flag", "--grammer"]
    assert list(code_lines("text\n\n    python -m bench.dub \\\n        --lengths 60\n")) == [
        (3, "python -m bench.dub --lengths 60")]


# A measured number: a quantity with a unit of time, size, rate or quality, a WER, a correlation, an LSE score, or a
# decimal in a table row (settings such as "25 fps" or "lr 1e-4" are not measurements and are not matched)
MEASURED = re.compile(r"(?m)\d(?:\.\d+)?\s?(?:dB|ms\b|s a step|s/step|frames/s|MB\b|GB\b|GiB|MiB|x faster|minutes)"
                      r"|WER \**\d|\br \d\.\d|LSE-[CD] \d|^\|.*\b\d+\.\d+")
COMMAND = re.compile(r"`[^`]*(?:python|bash|torchrun|\.py|\.sh)[^`]*`|^ {4}.*\b(?:python3?|bash|torchrun)\s", re.M)
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")
CPU_KIND = re.compile(r"\b(?:CPU|cores?|EPYC|Xeon|AVX\w*|AMX|H100|H200|GPU)\b", re.I)


def unsourced_numbers(text: str) -> List[Tuple[int, List[str]]]:
    """Paragraphs (and tables) of a markdown page that hold a measured number without its source: the command that
    reproduces it in the paragraph, the three before it or the one after it (a lead-in ending in ':'), and a commit
    and a CPU kind in its section up to it (a heading starts a section). -> [(paragraph index, what is missing)]."""
    blocks = re.split(r"\n\s*\n", text)
    missing = []
    for i, block in enumerate(blocks):
        if block.lstrip().startswith("#") or not MEASURED.search(block):
            continue
        section = [block]
        for j in range(i - 1, -1, -1):
            if blocks[j].lstrip().startswith("#"):
                break
            section.append(blocks[j])
        after = blocks[i + 1] if i + 1 < len(blocks) and block.rstrip().endswith(":") else ""
        near, before = "\n\n".join(section[:4] + [after]), "\n\n".join(section)
        lacks = [what for what, ok in (("command", COMMAND.search(near)), ("commit", COMMIT.search(before)),
                                       ("CPU", CPU_KIND.search(before))) if not ok]
        if lacks:
            missing.append((i, lacks))
    return missing


@pytest.mark.parametrize("doc", [os.path.relpath(d, ROOT) for d in DOCS])
def test_every_measured_number_names_its_command_commit_and_cpu(doc):
    """Issue 51: each number in README or docs names the command that reproduces it and where it was measured."""
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    blocks = re.split(r"\n\s*\n", text)
    bad = [f"{doc}: paragraph {i} ({blocks[i].strip()[:70]!r}...) lacks its {', '.join(lacks)}"
           for i, lacks in unsourced_numbers(text)]
    assert not bad, "\n".join(bad)


def test_an_unsourced_number_is_caught():
    sourced = ("## Speed\n\nMeasured at 3cbb064 on a 2-core AMD EPYC (`python -m bench.dub --lengths 60`):\n\n"
               "| clip | frames/s |\n| --- | --- |\n| 60 s | 41.2 |\n\nThe dub runs at 41.2 frames/s.\n")
    assert unsourced_numbers(sourced) == []
    assert unsourced_numbers("## Speed\n\nThe dub runs at 41.2 frames/s on 2 cores.\n") == [(1, ["command", "commit"])]
    assert unsourced_numbers(sourced.replace("3cbb064", "HEAD")) == [(2, ["commit"]), (3, ["commit"])]
    assert unsourced_numbers("## Settings\n\nFrames are read at 25 fps, lr 1e-4.\n") == []
    lead_in = "## Speed\n\n41.2 frames/s on a 2-core AMD EPYC at 3cbb064:\n\n    python -m bench.dub --lengths 60\n"
    assert unsourced_numbers(lead_in) == [] and unsourced_numbers(lead_in.replace(":\n", ".\n", 1)) == [(1, ["command"])]
