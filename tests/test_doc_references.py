"""Every module, file, function and section that the source, the docs pages and the README name
exists (issue 28: ~25 docstrings named modules from before the rooms, `beyondbp.slurm`,
`beyondbp.floor_fit`, ...).

What is read as a reference, and how it is resolved, without importing the package (the scan
takes well under a second):
- a dotted name `beyondbp.a.b[.c]`: the longest prefix that is a module of src/beyondbp/, then a
  name that module defines or imports at its top level, then (for a class) a name in its body;
- a path to a Python file, `study/plan.py`, `src/beyondbp/fit/frontier.py`,
  `tests/test_frontier.py`, and a path to a page, `docs/science.md`, `benchmarks/HEADS.md`: it
  exists under the repository, under src/beyondbp/, or (in the source) beside the module;
- a backticked `module.name` or `room.module[.name]` whose first part is a module or room of the
  package (`loop.train`, `methods.lookup.resolve_method`, `config.RANGES`): resolved as above,
  against every module of that name; configuration keys (`train.lr`), study-spec keys
  (`base.train.tracker`, `slurm.partition`) and file names (`config.yaml`) are not references;
- a section cited by its title, `README "Branched budgets"` or `docs/studies.md, "Presets"`:
  the page has a heading with that title.
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "beyondbp"

DOTTED = re.compile(r"(?<![\w.])beyondbp(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"(?<![\w./-])((?:[A-Za-z_][\w-]*/)+[A-Za-z_][\w-]*\.(?:py|md))(?![\w/])")
TICKED = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")
SECTION = re.compile(r"\b(README|docs/[\w-]+\.md)(?:,|'s)? (?:section )?\"([^\"\n]+)\"")
# first parts of spec keys and of results.json keys, which share a name with a module (base, slurm)
SPEC_KEYS = {"base", "slurm", "lrs", "sizes", "per_method", "variants", "seed_sizes", "sensitivity"}
FILE_SUFFIXES = {"py", "md", "yaml", "yml", "json", "jsonl", "pt", "csv", "png", "svg", "html", "tex", "txt",
                 "toml", "lock", "out", "err", "log", "partial", "tmp"}
OUTPUT_FOLDERS = ("DIR/", "RUN/", "STUDY/", "OUT/", "ENTRY", "runs/", "studies/", "report/", "trunks/")
# first parts that prose uses for a value, not the module of that name (`loss.backward()`)
VALUES = {"loss", "cfg", "args", "self"}


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__.py)."""
    found = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
        found.setdefault(".".join(parts[:-1]), path.parent)  # a room without __init__.py (namespace package)
    return found


@functools.cache
def by_basename() -> dict[str, list[str]]:
    """Module and room names (`loop`, `methods`) to the dotted modules that carry them."""
    names: dict[str, list[str]] = {}
    for dotted in modules():
        names.setdefault(dotted.rsplit(".", 1)[-1], []).append(dotted)
    return names


@functools.cache
def defined(module: str) -> tuple[frozenset, dict]:
    """A module's top-level names (defs, classes, assignments, imports) and each class's body names."""
    if modules()[module].is_dir():
        return frozenset(), {}
    tree = ast.parse(modules()[module].read_text(encoding="utf-8"))
    names, classes = set(), {}
    for node in tree.body:
        names |= _bound_names(node)
        if isinstance(node, ast.ClassDef):
            classes[node.name] = frozenset().union(*(_bound_names(n) for n in node.body))
    return frozenset(names), classes


def _bound_names(node) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(node, (ast.If, ast.Try)):  # names bound under `if TYPE_CHECKING:` or a try/except import
        return set().union(set(), *(_bound_names(n) for n in ast.walk(node) if n is not node and
                                    isinstance(n, (ast.Import, ast.ImportFrom, ast.Assign, ast.FunctionDef))))
    return set()


def resolves(dotted: str) -> bool:
    """`beyondbp.a.b.c`: a module, then a name it defines, then a name in that class's body."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in modules():
            rest = parts[cut:]
            if not rest:
                return True
            names, classes = defined(module)
            if rest[0] not in names:
                return f"{module}.{rest[0]}" in modules()
            return len(rest) == 1 or rest[0] not in classes or rest[1] in classes[rest[0]]
    return False


def resolves_ticked(token: str) -> bool | None:
    """A backticked `a.b[.c]`: True or False where `a` names a module or room; None otherwise."""
    head, *rest = token.split(".")
    if head in SPEC_KEYS | VALUES | {"beyondbp"} or FILE_SUFFIXES.intersection(rest) or token in config_keys():
        return None  # `beyondbp.x` is read as a dotted name already
    if f"beyondbp.{head}" in modules():
        return resolves(f"beyondbp.{token}")
    if head in by_basename():
        return any(resolves(f"{module}{token[len(head):]}") for module in by_basename()[head])
    return None


@functools.cache
def config_keys() -> frozenset:
    """Configuration keys (`train.lr`), which share first parts with rooms (train, model, data)."""
    from beyondbp.config import describe_keys
    return frozenset(key for key, _ in describe_keys())


def path_exists(text: str, beside: Path | None) -> bool:
    places = [ROOT, ROOT / "src", PKG] + ([beside] if beside else [])
    return any((place / text).exists() for place in places)


@functools.cache
def headings(page: str) -> frozenset:
    path = ROOT / ("README.md" if page == "README" else page)
    if not path.exists():
        return frozenset()
    return frozenset(m.group(1).strip().strip("`").lower()
                     for m in re.finditer(r"^#+ (.+?)\s*$", path.read_text(encoding="utf-8"), re.M))


def stale(text: str, beside: Path | None = None) -> list[str]:
    """The references in `text` that name nothing (see the module docstring), in order, once each."""
    bad = []
    for m in DOTTED.finditer(text):
        if not resolves(m.group(0)):
            bad.append(m.group(0))
    for m in PATH.finditer(text):
        if not m.group(1).startswith(OUTPUT_FOLDERS) and not path_exists(m.group(1), beside):
            bad.append(m.group(1))
    for m in TICKED.finditer(text):
        if resolves_ticked(m.group(1)) is False:
            bad.append(f"`{m.group(1)}`")
    for m in SECTION.finditer(text):
        title = m.group(2).strip().lower()
        if not any(h == title or h.startswith(title) for h in headings(m.group(1))):
            bad.append(f'{m.group(1)} "{m.group(2)}"')
    return list(dict.fromkeys(bad))


def sources():
    """(label, text, folder) for each source file and preset, each benchmark and example, each
    docs page and the README (the tests are left out: they name what does not exist on purpose)."""
    code = [*PKG.rglob("*.py"), *PKG.rglob("*.yaml"), *(ROOT / "benchmarks").glob("*.py"),
            *(ROOT / "examples").rglob("*.py")]
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").glob("*.md"),
             *(ROOT / "examples").rglob("*.md")]
    for path in sorted(code):
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"), path.parent
    for path in sorted(pages):
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"), None


def test_no_source_docs_page_or_readme_names_what_does_not_exist():
    found = [f"{label}: {ref}" for label, text, beside in sources() for ref in stale(text, beside)]
    assert not found, "names of nothing (renamed or removed?):\n" + "\n".join(found)


def test_the_scan_finds_a_stale_name_of_each_kind_and_accepts_live_ones():
    text = ("`beyondbp.slurm` moved; beyondbp.fit.frontier.no_such_fn; see study/local.py and "
            "`loop.no_such_fn`, README \"No such section\"; `config.RANGES`, beyondbp.fit.frontier, "
            "`methods.lookup.resolve_method`, runs/folder.py, `train.lr`, `config.yaml`, `base.train.tracker`, "
            "`torch.load`, DIR/report/verdict.md, tests/test_frontier.py.")
    assert stale(text) == ["beyondbp.slurm", "beyondbp.fit.frontier.no_such_fn", "study/local.py",
                           "`loop.no_such_fn`", 'README "No such section"']
