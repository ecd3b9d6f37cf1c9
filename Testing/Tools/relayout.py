"""Group the engine's flat modules into subpackages named for the pipeline's stages (issue 13).

    python Testing/Tools/relayout.py     # from the root of a checkout; then: git commit

`git mv`s each module of MOVES that is still flat to its subpackage (modules absent from the checkout are
skipped), writes the subpackages' `__init__.py` (a docstring only: importing a subpackage imports nothing, so
the Slicer module still loads without PyTorch), and rewrites what names a module by where it lives:
relative and absolute imports (split by subpackage where one statement named several modules), dotted
module paths in text (`python -m BrainTumorCNNLib.frontends.cli`, the console script, monkeypatch targets, code in
strings), `BrainTumorCNNLib/x.py` file paths, `__file__`-relative paths of the moved modules, cli.py's
SUBCOMMANDS table, the script list of BrainTumorCNN/CMakeLists.txt, pyproject.toml's package list and the
engine part of README's Layout.  Everything it changes is staged.  It is deterministic, and running it again
on its own result changes nothing.
"""
from __future__ import annotations

import ast
import re
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "BrainTumorCNNLib"
LIB = ROOT / "BrainTumorCNN" / PACKAGE

#: Subpackage -> its docstring (also its line in README's Layout).
SUBPACKAGES = {
    "reading": "Reading cases: image files, their grids and sanity checks, which file is which modality.",
    "preparing": "Preparing images for the networks: clipping, N4, z-scores; registration.",
    "network": "The networks of the paper, the model registry, safe weights files, FFT convolution.",
    "running": "Segmenting a case: dense inference, cleanup, the pipeline end to end, the GUI's worker task.",
    "scoring": "Scoring segmentations against ground truth: BraTS metrics and their tables.",
    "learning": "Training: the loop, the case cache and window sampling, augmentation, cross-validation.",
    "frontends": "The ways in: the braintumorcnn command and its subcommands, batch runs, Slicer nodes, previews.",
}
#: Flat module -> subpackage.  labels, modalities, atomic and data/ stay at the top (shared facts and utilities).
MOVES = {
    "io": "reading", "geometry": "reading", "sanity": "reading", "volume_names": "reading", "dicom": "reading",
    "preprocessing": "preparing", "registration": "preparing",
    "networks": "network", "registry": "network", "weights": "network", "fastconv": "network",
    "inference": "running", "postprocessing": "running", "pipeline": "running", "task": "running",
    "evaluation": "scoring",
    "training": "learning", "sampling": "learning", "augmentation": "learning", "crossval": "learning",
    "cli": "frontends", "batch": "frontends", "cluster": "frontends", "demo": "frontends", "bench": "frontends",
    "preview": "frontends", "mrml": "frontends", "phantom": "frontends", "template": "frontends",
}
TOP_LEVEL_NOTE = ("shared facts and utilities: the one table of tissues, colours, codes, label schemes and "
                  "regions; the four modalities; atomic writes; the phantom's intensity statistics")
#: Text edits no general rule covers: (file, old, new); applied where `old` is found.
FIXUPS = [
    ("Testing/Python/test_packaging.py",
     '    modules = {p.name for p in LIB.glob("*.py")}\n'
     '    assert modules - {p.name for p in lib.glob("*.py")} == set(), "modules missing from the wheel"',
     '    modules = {p.relative_to(LIB).as_posix() for p in LIB.rglob("*.py") if "__pycache__" not in p.parts}\n'
     '    assert modules - {p.relative_to(lib).as_posix() for p in lib.rglob("*.py")} == set(), '
     '"modules missing from the wheel"'),
    ("Testing/Python/test_packaging.py", 'for path in sorted(LIB.glob("*.py")):',
     'for path in sorted(LIB.rglob("*.py")):'),
]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def dotted(module: str) -> str:
    """`io` -> `reading.io` (a module's path inside the package, once moved)."""
    return f"{MOVES[module]}.{module}" if module in MOVES else module


def new_name(name: str) -> str:
    """An absolute module or attribute name, once moved: BrainTumorCNNLib.reading.io.x -> BrainTumorCNNLib.reading.io.x."""
    parts = name.split(".")
    if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in MOVES:
        parts[1:2] = dotted(parts[1]).split(".")
    return ".".join(parts)


def relative(target: str, package: str) -> str:
    """`target` (absolute) as seen from a module of `package`: BrainTumorCNNLib.reading, from
    BrainTumorCNNLib.frontends -> `..reading`."""
    t, p = target.split("."), package.split(".")
    common = 0
    while common < min(len(t), len(p)) and t[common] == p[common]:
        common += 1
    return "." * (len(p) - common + 1) + ".".join(t[common:])


def rewrite_imports(source: str, old_package: str, new_package: str) -> str:
    """Rewrite every `from ... import` naming a moved module: relative ones as seen from `old_package` before and
    `new_package` after, absolute `from BrainTumorCNNLib import a, b` ones split by subpackage."""
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or (node.level == 0 and node.module != PACKAGE):
            continue
        parts = old_package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else PACKAGE
        first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
        prefix = first.encode()[:node.col_offset].decode()
        suffix = last.encode()[node.end_col_offset:].decode()
        statement = "".join(lines[node.lineno - 1:node.end_lineno]).encode()
        statement = statement[node.col_offset:len(statement) - len(suffix.encode())].decode()
        names_text = statement.split(" import ", 1)[1]
        if node.module and node.level:
            groups = {new_name(f"{base}.{node.module}"): names_text}
        else:
            groups = {}
            for alias in node.names:
                parent = new_name(f"{base}.{alias.name}").rpartition(".")[0]
                groups.setdefault(parent, []).append(alias)
            if len(groups) == 1:
                groups = {next(iter(groups)): names_text}
            else:
                groups = {k: ", ".join(f"{a.name} as {a.asname}" if a.asname else a.name for a in v)
                          for k, v in groups.items()}
        new = [f"from {relative(module, new_package) if node.level else module} import {names}"
               for module, names in groups.items()]
        new.sort(key=import_key)
        if new == [statement]:
            continue
        assert len(new) == 1 or not prefix.strip(), f"cannot split {statement!r} (not alone on its line)"
        edits.append((node.lineno, node.end_lineno, "".join(prefix + line + suffix for line in new)))
    for start, end, text in sorted(edits, reverse=True):
        lines[start - 1:end] = [text]
    return sort_import_runs("".join(lines))


def import_key(statement: str):
    """Order of `from X import` statements: absolute before relative, farther relatives first, then by module."""
    module = statement.split()[1]
    level = len(module) - len(module.lstrip("."))
    return (0 if level == 0 else 1, -level, module.lstrip("."))


def sort_import_runs(source: str) -> str:
    """Sort each run of consecutive whole-line `from` imports of the package (relative or absolute)."""
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    bodies = [n.body for n in ast.walk(tree) if isinstance(getattr(n, "body", None), list)]
    for body in bodies:
        runs, run = [], []
        for node in body:
            ours = isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(PACKAGE))
            whole = ours and not lines[node.lineno - 1][:node.col_offset].strip() \
                and not lines[node.end_lineno - 1][node.end_col_offset:].strip().startswith(";")
            if whole and run and node.lineno == run[-1].end_lineno + 1:
                run.append(node)
            else:
                runs.append(run)
                run = [node] if whole else []
        runs.append(run)
        for run in runs:
            if len(run) < 2:
                continue
            chunks = ["".join(lines[n.lineno - 1:n.end_lineno]) for n in run]
            ordered = sorted(chunks, key=lambda c: import_key(c.strip()))
            if ordered != chunks:
                lines[run[0].lineno - 1:run[-1].end_lineno] = ordered
                return sort_import_runs("".join(lines))  # line numbers moved: start again
    return "".join(lines)


def split_absolute(m: re.Match) -> str:
    """`from BrainTumorCNNLib import a, b as c` (indentation, names, comment) as one line per subpackage."""
    groups = {}
    for alias in m[2].split(","):
        groups.setdefault(new_name(f"{PACKAGE}.{alias.split()[0]}").rpartition(".")[0], []).append(alias.strip())
    return "\n".join(f"{m[1]}from {module} import {', '.join(names)}{m[3]}" for module, names in sorted(groups.items()))


def rewrite_text(text: str, moved: dict, own_move: str = "") -> str:
    """Dotted module paths, file paths, `from BrainTumorCNNLib import x` lines (also in strings) and, for modules
    moved now, `__file__`-relative paths (one folder deeper)."""
    names = "|".join(sorted(MOVES, key=len, reverse=True))
    text = re.sub(rf"\b{PACKAGE}\.({names})\b", lambda m: f"{PACKAGE}.{dotted(m[1])}", text)
    text = re.sub(rf"\b{PACKAGE}/({names})\.py\b", lambda m: f"{PACKAGE}/{dotted(m[1]).replace('.', '/')}.py", text)
    text = re.sub(rf"^([ \t]*)from {PACKAGE} import ((?:\w+(?: as \w+)?, )*\w+(?: as \w+)?)([ \t]*(?:#.*)?)$",
                  split_absolute, text, flags=re.M)  # whole lines, also code in strings
    text = re.sub(rf"from {PACKAGE} import ({names})(?=\s*[;\"'])",
                  lambda m: f"from {PACKAGE}.{MOVES[m[1]]} import {m[1]}", text)

    def deeper(m):
        if m[1] == "__file__" and not own_move or m[1] != "__file__" and m[1].split(".")[0] not in moved:
            return m[0]
        return f"Path({m[1]}).resolve().parents[{int(m[2]) + 1 if m[2] else 1}]"
    return re.sub(r"Path\((__file__|\w+\.__file__)\)\.resolve\(\)\.parent(?:s\[(\d+)\])?", deeper, text)


def rewrite_cli(text: str) -> str:
    """cli.py's SUBCOMMANDS name each subcommand's module; as paths inside the package once modules are nested."""
    text = re.sub(r'^(\s+"[\w-]+": \(")(\w+)(",)', lambda m: m[1] + dotted(m[2]) + m[3], text, flags=re.M)
    return text.replace('import_module(f"{__package__}.{SUBCOMMANDS', f'import_module(f"{PACKAGE}.{{SUBCOMMANDS')


def engine_modules() -> list:
    """Package-relative paths of the engine's .py files, top level first, then each subpackage."""
    files = sorted(p.relative_to(LIB).as_posix() for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(files, key=lambda f: (f.count("/"), f.rpartition("/")[0], f != "__init__.py"
                                        and not f.endswith("/__init__.py"), f))


def update_cmake() -> None:
    path = ROOT / "BrainTumorCNN" / "CMakeLists.txt"
    text = path.read_text()
    listed = "".join(f"  ${{MODULE_NAME}}Lib/{f}\n" for f in engine_modules())
    text = re.sub(r"(  \$\{MODULE_NAME\}Batch\.py\n)(?:  \$\{MODULE_NAME\}Lib/\S+\.py\n)+", lambda m: m[1] + listed,
                  text)
    path.write_text(text)


def update_pyproject() -> None:
    path = ROOT / "pyproject.toml"
    packages = [PACKAGE] + [f"{PACKAGE}.{s}" for s in SUBPACKAGES if (LIB / s).is_dir()] + [f"{PACKAGE}.models"]
    listed = "\n".join(textwrap.wrap("packages = [" + ", ".join(f'"{p}"' for p in packages) + "]", 112,
                                     subsequent_indent=" " * len("packages = [")))
    text = re.sub(r"^packages = \[[^\]]*\]", lambda m: listed, path.read_text(), flags=re.M)
    path.write_text(rewrite_text(text, {}))


def update_readme() -> None:
    """The engine's lines of README's Layout: the top level, then one entry per subpackage with its modules."""
    path = ROOT / "README.md"
    text = path.read_text()
    indent, column = "    ", 31

    def entry(note: str) -> str:
        return "\n".join(textwrap.wrap(note, 112, initial_indent=" " * column, subsequent_indent=" " * column,
                                       break_on_hyphens=False)) + "\n"
    top = [f for f in engine_modules() if "/" not in f and f != "__init__.py"]
    block = indent + " ".join(top + ["data/"]) + "\n" + entry(TOP_LEVEL_NOTE)
    for sub, doc in SUBPACKAGES.items():
        if (LIB / sub).is_dir():
            order = [f"{m}.py" for m, s in MOVES.items() if s == sub]
            files = sorted((p.name for p in (LIB / sub).glob("*.py") if p.name != "__init__.py"),
                           key=lambda f: (order.index(f) if f in order else len(order), f))
            block += indent + " ".join([f"{sub}/"] + files) + "\n" + entry(doc[0].lower() + doc[1:].rstrip("."))
    text = re.sub(r"(  BrainTumorCNNLib/ +the engine[^\n]*\n)(?:    [^\n]*\n)+",
                  lambda m: m[1] + block, text)
    path.write_text(rewrite_text(text, {}))


def main() -> None:
    moved = {m: s for m, s in MOVES.items() if (LIB / f"{m}.py").is_file()}
    old_package = {}  # file (after the move) -> its package before the move
    for path in LIB.rglob("*.py"):
        old_package[path] = ".".join((PACKAGE,) + path.relative_to(LIB).parent.parts)
    for sub, doc in SUBPACKAGES.items():
        if sub in moved.values() and not (LIB / sub / "__init__.py").is_file():
            (LIB / sub).mkdir(exist_ok=True)
            (LIB / sub / "__init__.py").write_text(f'"""{doc}"""\n')
            old_package[LIB / sub / "__init__.py"] = f"{PACKAGE}.{sub}"
    for module, sub in moved.items():
        git("mv", f"{LIB / module}.py", str(LIB / sub / f"{module}.py"))
        old_package[LIB / sub / f"{module}.py"] = old_package.pop(LIB / f"{module}.py")
    for name in git("ls-files", "-co", "--exclude-standard", "*.py").split():
        path = ROOT / name
        if not path.is_file() or path == Path(__file__).resolve():
            continue
        text = original = path.read_text()
        if path in old_package:
            new_package = ".".join((PACKAGE,) + path.relative_to(LIB).parent.parts)
            own = path.parent != LIB and old_package[path] == PACKAGE and path.stem in moved
            text = rewrite_text(text, moved, own_move=path.stem if own else "")
            text = rewrite_imports(text, old_package[path], new_package)
            if own and path.stem == "cli":
                text = rewrite_cli(text)
        else:
            text = rewrite_imports(rewrite_text(text, moved), PACKAGE, PACKAGE)
        for file, old, new in FIXUPS:
            if path == ROOT / file:
                text = text.replace(old, new)
        if text != original:
            path.write_text(text)
    update_cmake()
    update_pyproject()
    update_readme()
    git("add", "-A", "BrainTumorCNN", "Testing", "pyproject.toml", "README.md")
    print(f"moved {len(moved)} modules: " + ", ".join(f"{m} -> {s}/" for m, s in moved.items()))


if __name__ == "__main__":
    main()
