"""Write one package and the verify_common code it uses as a single, self-contained module.

    python tools/vendor.py bn-verify path/to/dest      # writes path/to/dest/bn_verify.py

The packages follow rules that make this a matter of concatenation (see the
vendoring constraints of the repository): siblings are imported only as
module-level ``from ._module import a, b``, verify_common only as module-level
``from verify_common import a, b``, and every module-level name is unique
across the package and verify_common.  This tool checks those rules with
``ast`` and refuses loudly when one is broken, rather than writing a file that
fails at import time or, worse, silently binds a name to the wrong object.

The output is a function of the source tree only (no dates, no paths, stable
ordering), so re-running on an unchanged tree rewrites the same bytes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import heapq
import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _packages import (  # noqa: E402
    COMMON_DISTRIBUTION,
    REPO_ROOT,
    Package,
    PackageError,
    get_package,
    load_packages,
    write_atomic,
)

# Top-level packages a vendored module may import at module level.  Anything
# else (lightning, transformers, numpy) must be imported inside the function
# that needs it, so that importing the check needs only torch.
MODULE_LEVEL_IMPORTS = frozenset(sys.stdlib_module_names) | {"torch"}
IMPORT_LINE_LIMIT = 100


class VendorError(Exception):
    """The package cannot be inlined into one file; the message names the file, line and rule."""


@dataclasses.dataclass
class _Module:
    """One source module of the package being vendored or of verify_common."""

    package: str  # import name of its package
    name: str  # "_hooks", "__about__"
    path: Path
    source: str
    tree: ast.Module
    rank: int  # ordering tie-break: verify_common < the package < its __about__
    docstring: str | None = None
    kept: list[ast.stmt] = dataclasses.field(default_factory=list)
    removed_lines: set[int] = dataclasses.field(default_factory=set)
    # (package, module, [names]) imported from siblings / verify_common, with the line of the import
    internal_imports: list[tuple[str, str, list[str], int]] = dataclasses.field(default_factory=list)
    external_imports: list[ast.Import | ast.ImportFrom] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.package, self.name)

    @property
    def label(self) -> str:
        return f"{self.package}/{self.name}.py"

    def where(self, node: ast.AST) -> str:
        return f"{self.path}:{getattr(node, 'lineno', 1)}"


@dataclasses.dataclass(frozen=True)
class _Init:
    """What a package's ``__init__.py`` says: docstring, where each public name comes from, ``__all__``."""

    docstring_source: str | None
    origins: dict[str, tuple[str, str]]  # public name -> (package, module)
    all_names: tuple[str, ...] | None


# -- reading -----------------------------------------------------------------------


def _parse(path: Path) -> tuple[str, ast.Module]:
    source = path.read_text(encoding="utf-8")
    try:
        return source, ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise VendorError(f"{path}:{exc.lineno}: cannot parse: {exc.msg}") from None


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_all_assignment(node: ast.stmt) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and any(
        isinstance(target, ast.Name) and target.id == "__all__" for target in targets
    )


def _literal_names(node: ast.stmt, path: Path) -> tuple[str, ...]:
    value = getattr(node, "value", None)
    try:
        names = ast.literal_eval(value) if value is not None else None
    except ValueError:
        names = None
    if not isinstance(node, ast.Assign) or not isinstance(names, (list, tuple)) or not all(
        isinstance(name, str) for name in names
    ):
        raise VendorError(f"{path}:{node.lineno}: `__all__` must be one literal list of strings")
    return tuple(names)


def _plain_names(node: ast.ImportFrom, path: Path) -> list[str]:
    """The imported names, refusing ``*`` and ``as`` (neither survives concatenation)."""
    names = []
    for alias in node.names:
        if alias.name == "*":
            raise VendorError(f"{path}:{node.lineno}: `from ... import *` cannot be inlined; name the imports")
        if alias.asname not in (None, alias.name):
            raise VendorError(
                f"{path}:{node.lineno}: `import {alias.name} as {alias.asname}` from a sibling or verify_common "
                "cannot be inlined; import the name as it is defined"
            )
        names.append(alias.name)
    return names


def _read_init(package: Package, common: Package | None) -> _Init:
    path = package.src / "__init__.py"
    source, tree = _parse(path)
    docstring_source = None
    origins: dict[str, tuple[str, str]] = {}
    all_names = None
    for index, node in enumerate(tree.body):
        if index == 0 and _is_docstring(node):
            docstring_source = ast.get_source_segment(source, node)
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for name in _plain_names(node, path):
                origins[name] = (package.import_name, node.module)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and common is not None
            and node.module == common.import_name
            and package.import_name != common.import_name
        ):
            for name in _plain_names(node, path):
                origins[name] = (common.import_name, "")  # resolved through verify_common's __init__
        elif _is_all_assignment(node):
            all_names = _literal_names(node, path)
        else:
            raise VendorError(
                f"{path}:{node.lineno}: an `__init__.py` may hold only a docstring, `from ._module import ...`, "
                f"`from {common.import_name if common else 'verify_common'} import ...` and `__all__`; "
                "move this statement into a module"
            )
    return _Init(docstring_source, origins, all_names)


def _bound_names(node: ast.stmt) -> set[str]:
    """Names a module-level statement binds in the module namespace (not inside functions or classes)."""
    names: set[str] = set()
    stack: list[ast.AST] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(current.name)
            stack.extend(current.decorator_list)  # a walrus in a decorator binds at module level
            continue
        if isinstance(current, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(current, (ast.Import, ast.ImportFrom)):
            for alias in current.names:
                names.add(alias.asname or alias.name.split(".")[0])
            continue
        if isinstance(current, ast.Name) and isinstance(current.ctx, (ast.Store, ast.Del)):
            names.add(current.id)
        elif isinstance(current, ast.ExceptHandler) and current.name:
            names.add(current.name)
        elif isinstance(current, (ast.MatchAs, ast.MatchStar)) and current.name:
            names.add(current.name)
        elif isinstance(current, ast.MatchMapping) and current.rest:
            names.add(current.rest)
        stack.extend(ast.iter_child_nodes(current))
    return names


def _statement_lines(node: ast.stmt) -> range:
    first = min([node.lineno, *(decorator.lineno for decorator in getattr(node, "decorator_list", []))])
    return range(first, node.end_lineno + 1)


def _import_binding(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> tuple[str, tuple]:
    """``(bound name, what it is bound to)`` for one alias of a hoisted import.

    ``import a`` and ``import a.b`` both bind ``a`` to the same module, so they agree.
    """
    if isinstance(node, ast.Import):
        if alias.asname:
            return alias.asname, ("import", alias.name)
        top = alias.name.split(".")[0]
        return top, ("import", top)
    return alias.asname or alias.name, ("from", node.module, alias.name)


def _describe_binding(name: str, binding: tuple) -> str:
    if binding[0] == "defined":
        return "defined"
    if binding[0] == "import":
        return f"`import {binding[1]}`" + (f" as {name}" if name != binding[1] else "")
    return f"`from {binding[1]} import {binding[2]}" + (f" as {name}`" if name != binding[2] else "`")


class _Vendor:
    """Collects, checks, orders and renders the modules for one package."""

    def __init__(self, root: Path, distribution: str) -> None:
        self.packages = load_packages(root)
        self.package = get_package(self.packages, distribution)
        self.common = self.packages.get(COMMON_DISTRIBUTION)
        self.init = _read_init(self.package, self.common)
        if self.init.all_names is None:
            raise VendorError(f"{self.package.src / '__init__.py'}: defines no `__all__`")
        self.common_init = (
            _read_init(self.common, None)
            if self.common is not None and self.common.import_name != self.package.import_name
            else None
        )
        self.modules: dict[tuple[str, str], _Module] = {}

    # -- collection and checks ---------------------------------------------------
    def _src(self, package_name: str) -> Package:
        return self.package if package_name == self.package.import_name else self.common

    def _resolve(self, package_name: str, module: str, name: str, where: str) -> tuple[str, str]:
        """The module that defines ``name`` imported as ``from <package_name>[.<module>] import name``."""
        if module:
            return (package_name, module)
        public = self.common_init.all_names or ()
        if name not in public or name not in self.common_init.origins:
            raise VendorError(
                f"{where}: `{name}` is not a public name of {package_name} (not in its `__all__`); "
                "use only public names or add it to verify_common's public API"
            )
        return self.common_init.origins[name]

    def _load(self, key: tuple[str, str]) -> _Module:
        if key in self.modules:
            return self.modules[key]
        package_name, name = key
        path = self._src(package_name).src / f"{name}.py"
        if not path.is_file():
            raise VendorError(f"no module {package_name}.{name} ({path} does not exist)")
        source, tree = _parse(path)
        rank = 0 if package_name != self.package.import_name else (2 if name == "__about__" else 1)
        module = _Module(package_name, name, path, source, tree, rank)
        self.modules[key] = module
        self._analyse(module)
        return module

    def _own_import_names(self) -> set[str]:
        names = {self.package.import_name}
        if self.common is not None:
            names.add(self.common.import_name)
        return names

    def _analyse(self, module: _Module) -> None:
        own = self._own_import_names()
        top_level = set(map(id, module.tree.body))
        # Imports anywhere in the module: nested ones must not reach verify_common or the package.
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in own:
                        raise VendorError(
                            f"{module.where(node)}: `import {alias.name}` cannot be inlined; use "
                            f"`from {alias.name.split('.')[0]} import name` (or a sibling `from ._module import name`) "
                            "at module level"
                        )
            elif isinstance(node, ast.ImportFrom):
                target = (node.module or "").split(".")[0]
                if node.level > 1 or (node.level == 1 and not node.module):
                    raise VendorError(
                        f"{module.where(node)}: `from {'.' * node.level}{node.module or ''} import ...` cannot be "
                        "inlined; import siblings as `from ._module import name`"
                    )
                if node.level == 0 and target in own and node.module != target:
                    raise VendorError(
                        f"{module.where(node)}: `from {node.module} import ...` reaches into a private module; "
                        f"import public names as `from {target} import name`"
                    )
                if target == self.package.import_name and node.level == 0:
                    raise VendorError(
                        f"{module.where(node)}: `from {target} import ...` imports the package from itself; "
                        "import the sibling module instead (`from ._module import name`)"
                    )
                if (node.level == 1 or target in own) and id(node) not in top_level:
                    raise VendorError(
                        f"{module.where(node)}: an import of a sibling or of verify_common inside a function or "
                        "block cannot be inlined; move it to module level"
                    )
        for index, node in enumerate(module.tree.body):
            lines = _statement_lines(node)
            if index == 0 and _is_docstring(node):
                module.docstring = inspect.cleandoc(node.value.value)
            elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
                unsupported = [alias.name for alias in node.names if alias.name != "annotations"]
                if unsupported:
                    raise VendorError(
                        f"{module.where(node)}: `from __future__ import {unsupported[0]}` is not supported"
                    )
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                names = _plain_names(node, module.path)
                module.internal_imports.append((module.package, node.module, names, node.lineno))
            elif isinstance(node, ast.ImportFrom) and node.module in own:
                if self.common_init is None:  # verify_common itself
                    raise VendorError(
                        f"{module.where(node)}: verify_common imports itself; use `from ._module import name`"
                    )
                names = _plain_names(node, module.path)
                module.internal_imports.append((node.module, "", names, node.lineno))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    top = (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
                    if alias.name == "*":
                        raise VendorError(f"{module.where(node)}: `from {node.module} import *` cannot be inlined")
                    if top not in MODULE_LEVEL_IMPORTS:
                        raise VendorError(
                            f"{module.where(node)}: module-level import of `{top}`; only torch and the standard "
                            "library may be imported at module level -- import it inside the function that needs it"
                        )
                module.external_imports.append(node)
            elif _is_all_assignment(node):
                pass  # the submodule's own export list; the file gets the package's __all__
            else:
                module.kept.append(node)
                continue
            module.removed_lines.update(lines)
        kept_lines = {line for node in module.kept for line in _statement_lines(node)}
        shared = sorted(kept_lines & module.removed_lines)
        if shared:
            raise VendorError(
                f"{module.path}:{shared[0]}: an import shares its line with other code (`;`); put it on its own line"
            )

    def collect(self) -> list[_Module]:
        """Load every module reachable from the package's ``__init__``; return them in dependency order."""
        init_path = str(self.package.src / "__init__.py")
        # (module that must define the name, name, where it is imported) -- checked once all are loaded
        requests = [
            (self._resolve(package_name, module, name, init_path), name, init_path)
            for name, (package_name, module) in sorted(self.init.origins.items())
        ]
        edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
        pending = [(self.package.import_name, "__about__")] + [key for key, _, _ in requests]
        while pending:
            key = pending.pop()
            if key in edges:
                continue
            module = self._load(key)
            edges[key] = set()
            for package_name, name, names, line in module.internal_imports:
                where = f"{module.path}:{line}"
                for imported in names:
                    dependency = self._resolve(package_name, name, imported, where)
                    if dependency == key:
                        raise VendorError(f"{where}: the module imports from itself")
                    edges[key].add(dependency)
                    pending.append(dependency)
                    requests.append((dependency, imported, where))
        for key, name, where in requests:
            module = self.modules[key]
            if not any(name in _bound_names(node) for node in [*module.kept, *module.external_imports]):
                raise VendorError(f"{where}: `{name}` is not defined at module level in {'.'.join(key)}")
        return self._order(edges)

    def _order(self, edges: dict[tuple[str, str], set[tuple[str, str]]]) -> list[_Module]:
        """Topological order (dependencies first); ties broken by (rank, name) so the order is stable."""
        remaining = {key: set(dependencies) for key, dependencies in edges.items()}

        def sort_key(key: tuple[str, str]) -> tuple:
            return (self.modules[key].rank, key)

        ready = [sort_key(key) for key, dependencies in remaining.items() if not dependencies]
        heapq.heapify(ready)
        ordered: list[_Module] = []
        while ready:
            _, key = heapq.heappop(ready)
            ordered.append(self.modules[key])
            for other, dependencies in remaining.items():
                if key in dependencies:
                    dependencies.discard(key)
                    if not dependencies:
                        heapq.heappush(ready, sort_key(other))
        if len(ordered) != len(remaining):
            cycle = sorted(".".join(key) for key in remaining if key not in {m.key for m in ordered})
            raise VendorError(f"circular imports between {', '.join(cycle)}; a concatenated file needs an order")
        return ordered

    def check_unique_names(self, modules: list[_Module]) -> None:
        """Every module-level name has one meaning across all modules."""
        owners: dict[str, tuple[str, tuple]] = {}  # name -> (module label, what binds it)
        for module in modules:
            for node in module.external_imports:
                for alias in node.names:
                    name, binding = _import_binding(node, alias)
                    self._claim(owners, name, module, binding, node)
            for node in module.kept:
                for name in sorted(_bound_names(node)):
                    self._claim(owners, name, module, ("defined", module.label), node)

    @staticmethod
    def _claim(owners: dict, name: str, module: _Module, binding: tuple, node: ast.stmt) -> None:
        previous = owners.get(name)
        if previous is None:
            owners[name] = (module.label, binding)
        elif previous[1] != binding or binding[0] == "defined" and previous[0] != module.label:
            raise VendorError(
                f"{module.where(node)}: module-level name `{name}` is also bound in {previous[0]} "
                f"({_describe_binding(name, previous[1])} there, {_describe_binding(name, binding)} here); names "
                "must be unique across the package and verify_common -- rename one (e.g. with a distinctive "
                "private prefix)"
            )

    # -- rendering ---------------------------------------------------------------
    def render(self) -> str:
        modules = self.collect()
        self.check_unique_names(modules)
        # One blank line between the opening blocks, two around each module (PEP 8).
        opening = [
            self._header(),
            self.init.docstring_source,
            "from __future__ import annotations",
            _render_imports([node for module in modules for node in module.external_imports]),
        ]
        sections = []
        about = (self.package.import_name, "__about__")
        for module in modules:
            if module.key == about and module is modules[-1]:
                continue  # nothing needed the version early: it closes the file, beside __all__
            sections.append("\n".join([*_banner(module), self._body(module)]))
        closing = [self._body(self.modules[about])] if modules[-1].key == about else []
        closing += ["__all__ = [", *(f'    "{name}",' for name in self.init.all_names), "]"]
        sections.append("\n".join(closing))
        return "\n\n".join(filter(None, opening)) + "\n\n\n" + "\n\n\n".join(sections) + "\n"

    def _header(self) -> str:
        package, common = self.package, self.common
        uses_common = common is not None and common is not package and any(
            module.package == common.import_name for module in self.modules.values()
        )
        sources = f"{package.distribution} {package.version}"
        if uses_common:
            sources += f" and the parts of {common.distribution} {common.version} it uses"
        lines = [
            f"{package.import_name}.py: {sources}, in one file.",
            "",
            "GENERATED FILE -- DO NOT EDIT.  Written by tools/vendor.py from the model-verification",
            "repository; edits are lost when it is regenerated.  Regenerate it from a checkout with:",
            f"    python tools/vendor.py {package.distribution} <destination-dir>",
        ]
        if package.source_url:
            lines.append(f"Source: {package.source_url}")
        lines += [
            "Requires only torch.  Optional integrations (the Lightning callback) import their",
            "library when used.",
            "",
            "Licence: MIT, as follows.",
            "",
        ]
        licence = package.license_file.read_text(encoding="utf-8").strip().splitlines()
        copyrights = [line for line in licence if line.startswith("Copyright")]
        if uses_common and common.license_file.is_file():
            extra = [line for line in common.license_file.read_text(encoding="utf-8").splitlines()
                     if line.startswith("Copyright") and line not in copyrights]
            if extra:  # list every copyright holder right under the package's own line
                at = licence.index(copyrights[-1]) + 1 if copyrights else 0
                licence[at:at] = extra
        lines += licence
        return "\n".join(f"# {line}".rstrip() for line in lines)

    def _body(self, module: _Module) -> str:
        """The module's source minus its imports, docstring and ``__all__``, comments kept."""
        lines = module.source.splitlines()
        inside = {line for node in module.tree.body for line in _statement_lines(node)}
        out: list[str] = []
        blank_run = 0
        for number, line in enumerate(lines, start=1):
            if number in module.removed_lines:
                continue
            between_statements = number not in inside
            if between_statements and not line.strip():
                blank_run += 1
                if blank_run > 2:
                    continue  # a removed import left a gap; blank lines inside strings are never touched
            else:
                blank_run = 0
            out.append(line)
        while out and not out[0].strip():
            out.pop(0)
        while out and not out[-1].strip():
            out.pop()
        text = "\n".join(out)
        # The slice must parse to exactly the statements kept: proof that removing lines cut nothing else.
        try:
            parsed = ast.parse(text)
        except SyntaxError as exc:  # pragma: no cover - guarded by the checks in _analyse
            raise VendorError(f"{module.path}: cutting its imports broke the source ({exc.msg})") from None
        if [ast.dump(node) for node in parsed.body] != [ast.dump(node) for node in module.kept]:
            raise VendorError(f"{module.path}: cutting its imports changed other statements")  # pragma: no cover
        return text


def _banner(module: _Module) -> list[str]:
    lines = ["# " + "-" * 76, f"# {module.label}"]
    if module.docstring:
        lines.append("#")
        lines += [f"# {line}".rstrip() for line in module.docstring.splitlines()]
    lines += ["# " + "-" * 76, ""]
    return lines


def _render_imports(nodes: list[ast.Import | ast.ImportFrom]) -> str:
    """Hoisted imports, deduplicated: standard library, then torch; ``import m`` before ``from m import``."""
    plain: dict[bool, set[str]] = {False: set(), True: set()}  # `import a.b` stays dotted: it loads a.b
    froms: dict[bool, dict[str, set[str]]] = {False: {}, True: {}}
    for node in nodes:
        for alias in node.names:
            entry = alias.name if alias.asname in (None, alias.name) else f"{alias.name} as {alias.asname}"
            if isinstance(node, ast.Import):
                plain[alias.name.split(".")[0] == "torch"].add(entry)
            else:
                froms[node.module.split(".")[0] == "torch"].setdefault(node.module, set()).add(entry)
    groups = []
    for is_torch in (False, True):
        lines = [f"import {entry}" for entry in sorted(plain[is_torch])]
        for module, names in sorted(froms[is_torch].items()):
            line = f"from {module} import {', '.join(sorted(names))}"
            if len(line) > IMPORT_LINE_LIMIT:
                line = "\n".join([f"from {module} import (", *(f"    {name}," for name in sorted(names)), ")"])
            lines.append(line)
        groups.append("\n".join(lines))
    return "\n\n".join(filter(None, groups))


def _verify(text: str, init: _Init, filename: str) -> None:
    """The output compiles, and every name of the package's ``__all__`` is bound in it."""
    try:
        tree = ast.parse(text, filename=filename)
        compile(tree, filename, "exec")
    except SyntaxError as exc:  # pragma: no cover - every piece was parsed already
        raise VendorError(f"the generated {filename} does not compile: {exc}") from None
    bound = set().union(*map(_bound_names, tree.body))
    missing = [name for name in init.all_names if name not in bound]
    if missing:
        raise VendorError(f"`__all__` names {', '.join(missing)} are not defined in the generated {filename}")
    all_nodes = [node for node in tree.body if _is_all_assignment(node)]
    if len(all_nodes) != 1 or _literal_names(all_nodes[0], Path(filename)) != init.all_names:
        raise VendorError(f"the generated {filename} does not carry the package's `__all__`")  # pragma: no cover


def vendor(distribution: str, destination: Path, root: Path = REPO_ROOT) -> Path:
    """Write ``destination/<import_name>.py`` for ``distribution``; return its path.

    Raises ``VendorError`` (or ``PackageError`` for an unknown distribution) without writing anything.
    """
    job = _Vendor(root, distribution)
    filename = f"{job.package.import_name}.py"
    text = job.render()
    _verify(text, job.init, filename)
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / filename
    write_atomic(target, text)  # a parallel test run never reads half a file
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("distribution", help="distribution name, e.g. bn-verify")
    parser.add_argument("destination", type=Path, help="folder to write <import_name>.py into")
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="repository root holding packages/ (default: this checkout)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        target = vendor(args.distribution, args.destination, args.root)
    except (VendorError, PackageError) as exc:
        print(f"vendor.py: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
