"""Generate the reference sections of docs/INTEGRATION.md from the code, so they cannot drift.

Usage: ``uv run python tools/gen_docs.py`` rewrites the generated sections in place;
``uv run python tools/gen_docs.py --check`` exits 1 when they are stale (the test suite runs the
same comparison in ``tests/unit/test_generated_docs.py``).

Generated sections sit between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``:
- ``config:<Class>``: a table of the class's fields (type, default, meaning) from its NumPy
  docstring's Parameters section and the msgspec struct's defaults;
- ``cli``: every command's ``--help`` as click renders it, 100 columns wide;
- ``cli-options``: which command takes which option, a table (in the README too).

Both ``docs/INTEGRATION.md`` and ``README.md`` are scanned for sections.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "INTEGRATION.md"
README = ROOT / "README.md"
DOCS = (GUIDE, README)
_SECTION = re.compile(
    r"(<!-- generated:(?P<name>[^ ]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S
)
_CONFIGS = {
    "DSMDataClientConfig": "nautilus_dsm.config",
    "DSMSourceConfig": "nautilus_dsm.config",
    "DSMInstrumentProviderConfig": "nautilus_dsm.config",
}


def _parameters(doc: str) -> dict[str, tuple[str, str]]:
    """Map each documented name to (type text, one-paragraph description)."""
    lines = inspect.cleandoc(doc).splitlines()
    if "Parameters" not in lines:
        return {}
    out: dict[str, tuple[str, str]] = {}
    names: list[str] = []
    kind = ""
    text: list[str] = []
    i = lines.index("Parameters") + 2
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and lines[i + 1].startswith("---"):
            break  # the next section ("Notes", "Returns")
        if line and not line.startswith(" "):
            out.update({n: (kind, " ".join(text)) for n in names})
            head, _, kind = line.partition(":")
            names, kind, text = [n.strip() for n in head.split(",")], kind.strip(), []
        elif line.strip():
            text.append(line.strip())
        i += 1
    out.update({n: (kind, " ".join(text)) for n in names})
    return out


def _default(cls: Any, name: str) -> str:
    fields = cls.__struct_fields__
    defaults = cls.__struct_defaults__
    offset = len(fields) - len(defaults)
    index = fields.index(name)
    if index < offset:
        return "required"
    value = defaults[index - offset]
    if type(value).__name__ == "Factory":
        value = value.factory()
    if hasattr(value, "value") and type(value).__module__.startswith("nautilus_dsm"):
        value = value.value
    text = repr(value)
    if len(text) > 40:
        text = f"{type(value).__name__}()"
    return f"`{text}`"


def _md(text: str) -> str:
    # reST roles and literals to Markdown; pipes would split a table cell.
    text = re.sub(r":(class|meth|func|mod|attr):`~?([^`]+)`", r"`\2`", text)
    return text.replace("``", "`").replace("|", "\\|")


def config_table(class_name: str) -> str:
    """Markdown table of a config class's fields, in declaration order."""
    cls = getattr(importlib.import_module(_CONFIGS[class_name]), class_name)
    documented: dict[str, tuple[str, str]] = {}
    for klass in reversed(cls.__mro__):
        if klass.__doc__ and klass.__module__.startswith(("nautilus_dsm", "nautilus_trader")):
            documented.update(_parameters(klass.__doc__))
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name in cls.__struct_fields__:
        kind, text = documented.get(name, ("", ""))
        if not text:
            text = "(inherited from NautilusTrader)"
        kind = re.sub(r",\s*(optional|default.*)$", "", kind).strip() or "-"
        rows.append(f"| `{name}` | {_md(kind)} | {_default(cls, name)} | {_md(text)} |")
    return "\n".join(rows) + "\n"


def cli_reference() -> str:
    """Every command's help, as click renders it (100 columns)."""
    import click

    from nautilus_dsm.cli import cli

    blocks: list[str] = []

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(
            command, info_name=path[-1], parent=parent, terminal_width=100, max_content_width=100
        )
        blocks.append(f"### `{' '.join(path)}`\n\n```text\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name], ctx)

    walk(cli, ["nautilus-dsm"], None)
    return "\n".join(blocks)


def _leaf_commands() -> list[tuple[str, Any]]:
    """``(name, command)`` of every command that runs (groups left out), registration order."""
    import click

    from nautilus_dsm.cli import cli

    found: list[tuple[str, Any]] = []

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
            else:
                found.append((f"{prefix}{name}", command))

    walk(cli, "")
    return found


def cli_options_table() -> str:
    """Markdown table: a row per option, a column per command, ✓ where the command takes it."""
    import click

    commands = _leaf_commands()
    options: dict[str, set[str]] = {}
    for name, command in commands:
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                flag = " / ".join([*param.opts[:1], *param.secondary_opts])
                options.setdefault(flag, set()).add(name)
    names = [name for name, _ in commands]
    rows = [
        "| option | " + " | ".join(f"`{n}`" for n in names) + " |",
        "| --- |" + " :-: |" * len(names),
    ]
    for flag, takers in options.items():
        cells = " | ".join("✓" if n in takers else "" for n in names)
        rows.append(f"| `{flag}` | {cells} |")
    return "\n".join(rows) + "\n"


def render(name: str) -> str:
    """The fresh body of one generated section."""
    if name == "cli":
        return cli_reference()
    if name == "cli-options":
        return cli_options_table()
    if name.startswith("config:"):
        return config_table(name.split(":", 1)[1])
    raise SystemExit(f"unknown generated section {name!r} in {', '.join(map(str, DOCS))}")


def regenerate(text: str) -> str:
    """``text`` with every generated section rendered afresh."""
    return _SECTION.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the guide is stale")
    args = parser.parse_args()
    stale = []
    for doc in DOCS:
        text = doc.read_text()
        fresh = regenerate(text)
        if fresh == text:
            continue
        if args.check:
            stale.append(doc)
        else:
            doc.write_text(fresh)
            print(f"{doc}: generated sections rewritten")
    if stale:
        print(f"{', '.join(map(str, stale))} stale; run: uv run python tools/gen_docs.py")
        return 1
    print(f"{', '.join(str(d.relative_to(ROOT)) for d in DOCS)}: generated sections up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
