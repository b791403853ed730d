"""The import graph points one way: core <- stages <- apps, and no module imports itself back through others.

* core: `vseam.core` (model families, the intervention point, the HF engine, errors, vocabulary, files, toy
  checkpoints) and `vseam.head_profiles` (the profile contract) — import nothing above them;
* stages: `vseam.calibrate`, `vseam.patches`, `vseam.serve`, `vseam.benchmarks` — import core and each other;
* apps: the umbrella CLI (`vseam.cli`), `vseam.demo`, `vseam.organism`, `vseam.toy_cli`.

Every import counts, also the ones inside functions (they run just the same, only later); imports under
`if TYPE_CHECKING:` (annotations only, never run) do not. The source folders are read from pyproject.toml's
package-dir mapping, the same one the installed package is built from.
"""

from __future__ import annotations

import ast
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {
    "vseam.core": 0, "vseam.head_profiles": 0, "vseam": 0,
    "vseam.calibrate": 1, "vseam.patches": 1, "vseam.serve": 1, "vseam.benchmarks": 1,
    "vseam.cli": 2, "vseam.demo": 2, "vseam.organism": 2, "vseam.toy_cli": 2,
}
NAMES = {0: "core", 1: "stage", 2: "app"}


def modules() -> dict[str, pathlib.Path]:
    """Module name -> source file, for every module of the installed `vseam` namespace."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = cfg["package-dir"]
    out = {}
    for package in cfg["packages"]:
        best = max((p for p in dirs if package == p or package.startswith(p + ".")), key=len)
        folder = ROOT / dirs[best] / pathlib.Path(*package[len(best) + 1 :].split(".") if package != best else ())
        for f in sorted(folder.glob("*.py")):
            out[package if f.stem == "__init__" else f"{package}.{f.stem}"] = f
    return out


def layer(module: str) -> int:
    key = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[key]


def imports(module: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The vseam modules `module` imports (anywhere in the file)."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import vseam.core.engine.HeadEngine`-like: the longest module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node of the tree except those under `if TYPE_CHECKING:`."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", getattr(child.test, "attr", None)) == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def test_every_module_has_a_layer():
    mods = modules()
    assert len(mods) > 50
    assert {"vseam.core.engine", "vseam.calibrate.pipeline", "vseam.patches.plugin", "vseam.serve.cli",
            "vseam.benchmarks.run", "vseam.head_profiles.model", "vseam.demo"} <= set(mods)
    for m in mods:
        layer(m)


def test_imports_point_down_only():
    up = sorted(f"{a} ({NAMES[layer(a)]}) imports {b} ({NAMES[layer(b)]})"
                for a, deps in graph().items() for b in deps if layer(b) > layer(a))
    assert not up, "imports that point up:\n" + "\n".join(up)


def test_no_import_cycles():
    g = graph()
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The graph really is read from the code: a core module importing an app is found."""
    fake = tmp_path / "engine.py"
    fake.write_text("def f():\n    from vseam.demo import main\n")
    assert imports("vseam.core.engine", fake, {"vseam.demo", "vseam.core.engine"}) == {"vseam.demo"}
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vseam.demo import main\n")
    assert imports("vseam.core.engine", fake, {"vseam.demo", "vseam.core.engine"}) == set()
    assert layer("vseam.demo") > layer("vseam.core.engine")


def test_one_import_namespace(tmp_path):
    """Installed, vseam puts `vseam` into site-packages and nothing else: outside the repository the folders'
    own names do not import, their `vseam.` names do."""
    import subprocess
    import sys

    code = ("import importlib, json\n"
            "out = {}\n"
            "for name in ('serve', 'calibrate', 'patches', 'benchmarks', 'head_profiles',\n"
            "             'vseam.serve', 'vseam.calibrate', 'vseam.patches', 'vseam.benchmarks', 'vseam.head_profiles'):\n"
            "    try:\n"
            "        importlib.import_module(name); out[name] = True\n"
            "    except ModuleNotFoundError:\n"
            "        out[name] = False\n"
            "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    import json

    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert found == {"serve": False, "calibrate": False, "patches": False, "benchmarks": False, "head_profiles": False,
                     "vseam.serve": True, "vseam.calibrate": True, "vseam.patches": True, "vseam.benchmarks": True,
                     "vseam.head_profiles": True}
