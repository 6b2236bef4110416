"""The house rules of the layout: every import points down, no module imports itself round a cycle,
and the environment is read in one place. Static (AST): a violation fails the suite without running it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each package (or top-level module) and the project packages it may import, lowest first
# (docs/architecture.md). Anything not listed may not be imported; tests/ and benchmarks/ are free.
ALLOWED: dict[str, set[str]] = {
    "catalog": set(),
    "settings": set(),
    "store": {"catalog"},
    "linkage": {"catalog"},
    "quality": {"catalog"},
    "verification": {"catalog", "linkage"},
    "exchange": {"catalog", "linkage", "verification", "quality"},
    "fixtures": {"catalog", "linkage"},
    "day": {"catalog", "settings", "store", "linkage", "verification", "quality", "exchange"},
    "pipelines": {"catalog", "settings", "store", "linkage", "verification", "quality", "exchange", "day", "fixtures"},
}
PROJECT = set(ALLOWED)
# Where os.environ may be read: the settings, and the CLI entry point (DAGSTER_HOME for the Dagster instance).
ENVIRONMENT_READERS = {"settings.py", "pipelines/cli.py"}


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """module name -> file, for every production module of the project."""
    out = {}
    for top in PROJECT:
        if (root / f"{top}.py").exists():
            out[top] = root / f"{top}.py"
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else []:
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def project_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a project module, at any depth of the file."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import mod` imports pkg.mod when mod is a module
            names = [f"{stem}.{a.name}" for a in node.names] + [stem]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in PROJECT]
    return found


def upward_imports(root: Path = ROOT) -> list[str]:
    """One line per import statement that reaches a package its own may not import."""
    bad = {}
    for module, path in _modules(root).items():
        top = module.split(".")[0]
        for line, name in project_imports(path, module):
            target = name.split(".")[0]
            if target != top and target not in ALLOWED[top]:
                key = (str(path.relative_to(root)), line)
                if key not in bad or len(name) < len(bad[key][0]):
                    bad[key] = (name, f"{key[0]}:{line} ({top}) imports {name} ({target})")
    return sorted(text for _name, text in bad.values())


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Cycles among the project's modules (strongly connected components of more than one module)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for _line, name in project_imports(path, module):
            while name and name not in modules:  # `from pkg import name` where name is not a module
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):  # a package's own parents run first
                graph[module].add(name)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def environment_reads(root: Path = ROOT) -> list[str]:
    bad = []
    for module, path in _modules(root).items():
        rel = str(path.relative_to(root))
        if rel in ENVIRONMENT_READERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                bad.append(f"{rel}:{node.lineno} reads os.{node.attr}")
    return bad


def test_every_import_points_down():
    assert upward_imports() == []


def test_no_import_cycle():
    assert import_cycles() == []


def test_only_settings_read_the_environment():
    assert environment_reads() == []


@pytest.fixture
def tree(tmp_path):
    """A copy of the production packages to break on purpose."""
    import shutil

    for top in PROJECT:
        if (ROOT / top).is_dir():
            shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
        elif (ROOT / f"{top}.py").exists():
            shutil.copy(ROOT / f"{top}.py", tmp_path / f"{top}.py")
    return tmp_path


def test_the_checks_catch_what_they_guard(tree):
    """An upward import, a cycle hidden in a function and an environment read are each found."""
    roles = tree / "linkage" / "roles.py"
    roles.write_text(roles.read_text(encoding="utf-8") + "\nfrom exchange.process import process_date\n", encoding="utf-8")
    assert any("linkage/roles.py" in b and "exchange.process" in b for b in upward_imports(tree))
    ids = tree / "linkage" / "ids.py"
    ids.write_text(ids.read_text(encoding="utf-8") + "\n\ndef _late():\n    from linkage.roles import build_roles\n",
                   encoding="utf-8")
    assert any("linkage.ids" in c and "linkage.roles" in c for c in import_cycles(tree))
    db = tree / "store" / "db.py"
    db.write_text(db.read_text(encoding="utf-8") + "\nimport os\nURL = os.environ.get('X')\n", encoding="utf-8")
    assert any(b.startswith("store/db.py") for b in environment_reads(tree))
