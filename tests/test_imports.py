"""The package's modules form no import circle: no module of ``course_lib`` imports, even inside a function, a
module that imports it back (through any chain). A circle makes import order matter and hides what depends on what."""
import ast
from pathlib import Path

import course_lib

PACKAGE = Path(course_lib.__file__).parent


def module_names() -> dict[str, Path]:
    """course_lib's modules by dotted name (a package by its own name) -> file."""
    names = {}
    for f in PACKAGE.rglob("*.py"):
        parts = ("course_lib", *f.relative_to(PACKAGE).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return names


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The course_lib modules that ``name`` imports anywhere in its file, functions included."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join([package.rsplit(".", node.level - 1)[0] if node.level > 1 else package,
                                 *([node.module] if node.module else [])])
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return (out & set(modules)) - {name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan): each is an import circle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_to_the_modules_they_name():
    modules = module_names()
    assert {"course_lib.course", "course_lib.evaluate", "course_lib.data"} <= imported(
        "course_lib.results", modules["course_lib.results"], modules)
    assert "course_lib.results" in imported("course_lib.viz", modules["course_lib.viz"], modules)


def test_no_module_imports_one_that_imports_it_back():
    modules = module_names()
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert circles(graph) == []
