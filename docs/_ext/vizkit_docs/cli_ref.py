"""The command-line reference, generated from the ``vizkit`` argparse parser (:func:`vizkit.cli.build_parser`):
every subcommand with its usage line, description and a table of every flag."""

from __future__ import annotations

import argparse
from pathlib import Path

from .util import md_cell, write_if_changed


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, one-line help, parser)`` of every subcommand, in the order ``vizkit --help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _default(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
        return ""
    if action.default is None or action.default == argparse.SUPPRESS or action.default == []:
        return ""
    return f"`{action.default}`"


def _names(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"`{s}`" for s in action.option_strings)
    else:
        names = f"`{action.metavar or action.dest}`"
    if action.nargs != 0 and action.option_strings:
        metavar = action.metavar
        if isinstance(metavar, tuple):
            metavar = " ".join(metavar)
        if metavar is None:
            metavar = action.dest.upper()
        if action.nargs in ("+", "*"):
            metavar = f"{metavar} ..."
        names += f" {metavar}" if action.choices is None else ""
    return names


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    text = action.help or ""
    if "%(" in text:
        params = dict(vars(action), prog=parser.prog)
        if isinstance(params.get("choices"), (list, tuple)):
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    if action.choices is not None:
        text += " (one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
    return text


def flags_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| flag | default | what it does |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        rows.append(f"| {md_cell(_names(action))} | {md_cell(_default(action))} | {md_cell(_help(action, parser))} |")
    return rows


def page(parser: argparse.ArgumentParser | None = None) -> str:
    """The markdown source of the CLI reference page."""
    if parser is None:
        from vizkit.cli import build_parser

        parser = build_parser()
    subs = subcommands(parser)
    out = [
        "# Command line: `vizkit`",
        "",
        "Generated from the argparse parsers in `vizkit/cli/` (`make docs`): every subcommand and flag as",
        "`vizkit <command> --help` prints them. The same command is `python -m vizkit.cli`. How the commands",
        "are used, with examples, is in the how-to guides ({doc}`../howto/index`).",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        "| subcommand | what it does |",
        "|---|---|",
    ]
    out += [f"| [`{name}`](#vizkit-{name}) | {md_cell(helptext)} |" for name, helptext, _ in subs]
    out += ["", "Global flags: `--version` prints the installed version, `--help` the usage.", ""]
    for name, helptext, sub in subs:
        out += [f"(vizkit-{name})=", f"## `vizkit {name}`", "", md_cell(helptext) + ".", ""]
        if sub.description:
            out += [sub.description, ""]
        out += ["```text", sub.format_usage().strip(), "```", ""]
        out += flags_table(sub)
        out += [""]
    return "\n".join(out)


def write(path: Path) -> Path:
    write_if_changed(path, page())
    return path
