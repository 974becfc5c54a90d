"""The dependency rule (docs/architecture.md), checked on the source: imports point one way.

    launch.py ─► scheduler.py ─► trainer/ ─┐
         └─────► bot/ ─────────────────────┴─► kaizen/ ─► feedback_db/

`bot/` and `trainer/` never import each other; `kaizen/` (the shared leaf) imports only
`feedback_db/`; `feedback_db/` imports no other part of the project. Every import counts,
including those inside functions. Module-level imports also form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("feedback_db", "kaizen", "bot", "trainer", "scheduler", "launch")
# What each part may import (besides itself and third-party code).
ALLOWED = {
    "feedback_db": set(),
    "kaizen": {"feedback_db"},
    "bot": {"kaizen", "feedback_db"},
    "trainer": {"kaizen", "feedback_db"},
    "scheduler": {"trainer", "kaizen", "feedback_db"},
    "launch": {"scheduler", "bot", "trainer", "kaizen", "feedback_db"},
}


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def source_files(root: Path) -> list[Path]:
    files = [root / f"{name}.py" for name in PARTS if (root / f"{name}.py").is_file()]
    for name in PARTS:
        if (root / name).is_dir():
            files += sorted((root / name).rglob("*.py"))
    return files


def imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top = {id(node) for node in tree.body}
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` may import a submodule: record both forms.
            found.append((base, node.lineno, id(node) in top))
            found += [(f"{base}.{alias.name}", node.lineno, id(node) in top) for alias in node.names]
    return found


def violations(root: Path) -> list[str]:
    """Every import that runs against the dependency rule, as 'file:line: a -> b'."""
    bad = []
    for path in source_files(root):
        module = module_name(root, path)
        part = module.split(".")[0]
        for target, line, _ in imports(path, module):
            other = target.split(".")[0]
            if other in PARTS and other != part and other not in ALLOWED[part]:
                bad.append(f"{path.relative_to(root)}:{line}: {part} -> {other} ({target})")
    return bad


def cycles(root: Path) -> list[list[str]]:
    """Cycles among module-level imports of project modules."""
    files = {module_name(root, p): p for p in source_files(root)}
    graph = {m: sorted({t for t, _, top in imports(p, m) if top and t in files and t != m}) for m, p in files.items()}
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_imports_follow_the_dependency_rule():
    bad = violations(ROOT)
    assert not bad, "imports against the dependency rule (docs/architecture.md):\n" + "\n".join(bad)


def test_module_level_imports_form_no_cycle():
    found = cycles(ROOT)
    assert not found, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_check_catches_a_trainer_to_bot_import(tmp_path):
    for part in ("bot", "trainer", "kaizen"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "__init__.py").write_text("")
    (tmp_path / "bot" / "chat.py").write_text("from kaizen import text\n")
    (tmp_path / "trainer" / "rounds.py").write_text("import os\n\ndef f():\n    from bot.chat import load_persona\n")
    (tmp_path / "kaizen" / "x.py").write_text("from . import y\nfrom ..bot import chat\n")
    assert violations(tmp_path) == ["kaizen/x.py:2: kaizen -> bot (bot)", "kaizen/x.py:2: kaizen -> bot (bot.chat)",
                                    "trainer/rounds.py:4: trainer -> bot (bot.chat)",
                                    "trainer/rounds.py:4: trainer -> bot (bot.chat.load_persona)"]


def test_the_check_catches_a_cycle(tmp_path):
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "__init__.py").write_text("")
    (tmp_path / "trainer" / "a.py").write_text("from trainer import b\n")
    (tmp_path / "trainer" / "b.py").write_text("import trainer.a\n")
    assert cycles(tmp_path) == [["trainer.a", "trainer.b", "trainer.a"]]


@pytest.mark.parametrize("name", ["settings", "errors"])
def test_no_generic_top_level_module_is_shipped(name):
    """A top-level `settings` or `errors` module would shadow (or be shadowed by) any other."""
    assert not (ROOT / f"{name}.py").exists()
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert name not in config.get("py-modules", [])
