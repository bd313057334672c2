"""Every flag of every ``vizkit`` subcommand, and every non-default value of a flag with choices, is
passed by at least one test (issue 28): the argparse parsers are walked, the tests' source is read.

What counts as "a test passes it" (:func:`passed_flags`): the option string is a string constant
in an argument position -- an element of a list / tuple / set display or a positional argument of
a call, the way an argv is written -- inside a test function, its decorators, or a module-level
helper or constant it names (followed transitively), and the subcommand's name appears the same
way in that closure. A flag in a comment, a docstring, an f-string, a comparison (``"--fps" in
err``), an assert message or prose never counts; nor do the flags test_cli_errors.py feeds wrong
paths through (they are read from the parser, not written in a test)."""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from vizkit.cli import build_parser

TESTS = Path(__file__).resolve().parents[1]  # tests/
# where a constant is an argv element: a list / tuple / set display, a call's positional argument
ARGV_PARENTS = (ast.List, ast.Tuple, ast.Set, ast.Call, ast.Starred)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's optional arguments, ``--help`` and the subcommand list aside."""
    return [
        a
        for a in parser._actions
        if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def _argv_constants(tree: ast.AST) -> dict[int, set[str]]:
    """``id(node) -> strings`` of each top-level statement: the string constants in argv positions
    (dict keys too: a table of subcommands), docstrings and f-string parts excluded."""
    parents: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
    out: dict[int, set[str]] = {}
    for stmt in tree.body:
        found = set()
        for node in ast.walk(stmt):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            parent = parents.get(id(node))
            in_call = isinstance(parent, ast.Call) and any(node is a for a in parent.args)
            in_display = isinstance(parent, ARGV_PARENTS) and not isinstance(parent, ast.Call)
            dict_key = isinstance(parent, ast.Dict) and any(node is k for k in parent.keys)
            if in_call or in_display or dict_key:
                found.add(node.value)
        out[id(stmt)] = found
    return out


def _defined_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def closures_of(source: str) -> list[tuple[str, set[str]]]:
    """``(test name, strings)`` per test function of a module's ``source``: its argv constants and
    those of the module-level definitions it names, transitively."""
    tree = ast.parse(source)
    consts = _argv_constants(tree)
    defs: dict[str, tuple[set[str], set[str]]] = {}
    for stmt in tree.body:
        names = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
        for name in _defined_names(stmt):
            defs[name] = (consts[id(stmt)], names)
    closures = []
    for name in defs:
        if not name.startswith("test_"):
            continue
        seen, todo, strings = {name}, list(defs[name][1]), set(defs[name][0])
        while todo:
            ref = todo.pop()
            if ref in defs and ref not in seen:
                seen.add(ref)
                strings |= defs[ref][0]
                todo += defs[ref][1]
        closures.append((name, strings))
    return closures


def passed_flags(
    closures: Iterable[tuple[str, set[str]]], parsers: dict[str, argparse.ArgumentParser]
) -> dict[tuple[str, str], list[str]]:
    """``(subcommand, first option string) -> tests`` for each flag (and ``(subcommand, "--flag=value")``
    for each value of a flag with choices) some test passes."""
    used: dict[tuple[str, str], list[str]] = {}
    for test, strings in closures:
        for name, parser in parsers.items():
            if name not in strings:
                continue
            for action in flags(parser):
                if not set(action.option_strings) & strings:
                    continue
                used.setdefault((name, action.option_strings[0]), []).append(test)
                for value in action.choices or ():
                    if str(value) in strings:
                        used.setdefault((name, f"{action.option_strings[0]}={value}"), []).append(test)
    return used


def required(parsers: dict[str, argparse.ArgumentParser]) -> list[tuple[str, str]]:
    """Every flag, and every value of a flag with choices but its default (the runs without the
    flag exercise that one)."""
    out = []
    for name, parser in parsers.items():
        for action in flags(parser):
            if isinstance(action, argparse._VersionAction):
                continue
            out.append((name, action.option_strings[0]))
            out += [(name, f"{action.option_strings[0]}={v}") for v in action.choices or () if v != action.default]
    return out


def all_closures() -> list[tuple[str, set[str]]]:
    out = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if path.name == Path(__file__).name:  # this module names flags to test the walk itself
            continue
        rel = path.relative_to(TESTS)
        out += [(f"{rel}::{t}", s) for t, s in closures_of(path.read_text(encoding="utf-8"))]
    return out


def test_every_flag_and_every_value_is_passed_by_a_test():
    parsers = subcommands()
    assert set(parsers) == {"clip-gradcam", "detector-attention", "detector-gradcam", "evaluate", "run", "vlm-video"}
    used = passed_flags(all_closures(), parsers)
    missing = [f"vizkit {name} {flag}" for name, flag in required(parsers) if (name, flag) not in used]
    what = "flags no test passes (tests/cli/test_cli_flag_walk.py says what counts):\n"
    assert not missing, what + "\n".join(missing)


def test_version_flag_is_passed():
    strings = set().union(*(s for _, s in all_closures()))
    assert "--version" in strings


SAMPLE = '''
"""A module docstring naming "--fps"."""
from vizkit.cli import main

ARGS = ["--sinks", "mask"]


def helper(out):
    return ["vlm-video", "--output-dir", str(out), *ARGS]


def test_passes(tmp_path):
    """--max_image_num in a docstring."""
    assert main(helper(tmp_path)) == 0  # --kernel in a comment


def test_only_mentions(capsys):
    err = capsys.readouterr().err
    assert "--fps" in err and f"--heads {1}" not in err, "--layers must be given"
    assert {"--mode": 1}["--mode"] == 1


@pytest.mark.parametrize("command", {"detector-gradcam": ["--target"]})
def test_table(command):
    main([command, "--target", "real"])
'''


def test_what_counts_as_passing_a_flag():
    """A flag counts in an argv (directly or through a helper or constant the test names), never in
    a comment, docstring, comparison, f-string, assert message or dict subscript."""
    parsers = subcommands()
    used = passed_flags(closures_of(SAMPLE), parsers)
    assert set(used) == {
        ("vlm-video", "--output-dir"),
        ("vlm-video", "--sinks"),
        ("vlm-video", "--sinks=mask"),
        ("detector-gradcam", "--target"),
        ("detector-gradcam", "--target=real"),
    }
    assert used[("vlm-video", "--sinks=mask")] == ["test_passes"]
    assert ("vlm-video", "--fps") not in used and ("vlm-video", "--max_image_num") not in used
    assert ("run", "--kernel") not in used and ("vlm-video", "--layers") not in used
    assert ("vlm-video", "--mode") not in used and ("vlm-video", "--heads") not in used


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_required_lists_each_flag_once(name):
    parser = subcommands()[name]
    req = [f for n, f in required({name: parser}) if "=" not in f]
    assert len(req) == len(set(req)) == len(flags(parser))
