"""The house's rules, checked on the installed package: imports point down, files stay short."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import omnimae

ROOT = Path(omnimae.__file__).parent
# the rooms, bottom to top; a module may import its own layer and those below, never one above
LAYERS = {
    "core": ["errors", "patches", "pos_embed", "masking", "masking_plane", "curves", "masking_schedule", "adapter", "features", "objectives", "model", "tokenizers"],
    "machinery": ["io", "hardware", "config", "data", "checkpoint", "visualize", "build"],
    "modalities": ["modalities"],
    "uses": ["train", "forecasting", "probe", "embedding", "export", "serve", "finetune", "api", "studies"],
    "cli": ["cli"],
}
RANK = {room: i for i, room in enumerate(LAYERS)}


def _package_files() -> dict[str, Path]:
    """Module name -> file, for the installed omnimae and its mapped subpackages."""
    import omnimae.configs
    import omnimae.modalities
    import omnimae.tokenizers

    out = {}
    for pkg in (omnimae, omnimae.modalities, omnimae.tokenizers):
        base = Path(pkg.__file__).parent
        for f in base.rglob("*.py"):
            rel = f.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg.__name__, *parts])] = f
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "omnimae" or len(parts) < 2:
        return None
    for room, names in LAYERS.items():
        if parts[1] in names:
            return room
    return None


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every omnimae module imported anywhere in the file (function-level imports too)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return [(n, m) for n, m in found if m.startswith("omnimae")]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """'omnimae.masking.random_masking' -> 'omnimae.masking' (the longest prefix that is a module)."""
    parts = name.split(".")
    for k in range(len(parts), 1, -1):
        if ".".join(parts[:k]) in modules:
            return ".".join(parts[:k])
    return None


def test_imports_point_down():
    modules = _package_files()
    wrong: list[str] = []
    for module, path in sorted(modules.items()):
        mine = _layer(module)
        if mine is None:
            continue
        for line, name in _imports(path, module):
            target = _resolve(name, modules)
            theirs = _layer(target) if target else None
            if theirs is None:
                continue
            if target == "omnimae.modalities" and mine != "core":
                continue  # importing the package registers every adapter: allowed above the core
            if RANK[theirs] > RANK[mine]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} ({mine}) imports {target} ({theirs})")
            elif theirs == "modalities" and mine not in ("modalities", "cli"):
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} ({mine}) names a modality: {target}")
    wrong = list(dict.fromkeys(wrong))
    assert not wrong, "imports that point up or name a modality outside cli/:\n" + "\n".join(wrong)


def test_every_module_is_in_a_room():
    modules = _package_files()
    homeless = [m for m in modules if m.count(".") >= 1 and _layer(m) is None and not m.startswith("omnimae.configs")]
    assert not homeless, f"modules outside every room of LAYERS: {homeless}"


def test_no_private_name_crosses_modules():
    modules = _package_files()
    crossing = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("omnimae"):
                crossing += [f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {node.module}.{a.name}"
                             for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not crossing, "private names imported across modules:\n" + "\n".join(crossing)


@pytest.mark.parametrize("limit", [350])
def test_files_stay_short(limit):
    long = {str(p.relative_to(ROOT.parent)): n for p in _package_files().values()
            if (n := len(p.read_text().splitlines())) > limit}
    assert not long, f"files over {limit} lines: {long}"


def test_every_package_is_listed_for_wheels():
    """pyproject.toml lists packages one by one (the folders are mapped under omnimae.): a folder with an
    __init__.py that is not listed is missing from an installed (not editable) omnimae."""
    import tomllib

    root = ROOT.parent
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {package: root / folder for package, folder in setup["package-dir"].items()}
    found = {package + "".join("." + part for part in init.parent.relative_to(folder).parts)
             for package, folder in folders.items() for init in folder.rglob("__init__.py")}
    assert found <= set(setup["packages"]), f"packages missing from pyproject.toml: {sorted(found - set(setup['packages']))}"


def test_long_functions_say_why():
    """A function over 40 lines carries a `# long:` comment saying why it is one piece."""
    unexplained = []
    for path in _package_files().values():
        src = path.read_text()
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 40:
                if not any(line.strip().startswith("# long:") for line in lines[node.lineno - 1 : node.end_lineno]):
                    unexplained.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} "
                                       f"({node.end_lineno - node.lineno + 1} lines)")
    assert not unexplained, "functions over 40 lines without a `# long:` reason (split them, or say why):\n" + "\n".join(unexplained)
