"""Mutation run: how many small changes to the code the tests notice ("kill"), per module.

    python benchmarks/mutation_run.py [--module admission] [--max-mutants 200] [--timeout 120] [--jobs 1]
                                      [--list-survivors]

Each mutant changes one place of one module: a condition flipped (``if x`` -> ``if not (x)``, a comparison
negated), ``and``/``or`` swapped, or a statement inside a function removed (replaced by ``pass``). The module's
relevant tests then run against the mutant (pytest ``-x``, loaded through an import hook, so the working tree is never
touched); a failing or hanging run kills it. Mutants that no test can kill because they do not change behaviour are
listed in EQUIVALENT with the reason, and left out of the percentage.

A full run takes a while (a pytest start per mutant): ``--max-mutants`` takes an evenly spread sample of each module,
``--timeout`` bounds each run. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODULE_VARIABLE, _FILE_VARIABLE = "KVBACKUP_MUTANT_MODULE", "KVBACKUP_MUTANT_FILE"

#: short name -> (import name, source path, the tests that exercise it)
RULES_TESTS = ("tests/test_rules.py", "tests/test_export_rules.py", "tests/test_pins.py", "tests/test_identity.py",
               "tests/test_webhook.py")
MODULES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    **{f"rules.{name}": (f"kubectl_kvbackup.rules.{name}", f"kubectl_kvbackup/rules/{name}.py", RULES_TESTS)
       for name in ("context", "export", "identity", "objects", "restore")},
    "edges": ("kubectl_kvbackup.graph.edges", "kubectl_kvbackup/graph/edges.py",
              ("tests/test_edges.py", "tests/test_pins.py", "tests/test_rules.py", "tests/test_graph_cli.py",
               "tests/test_graph_cluster.py")),
    "bundle": ("kubectl_kvbackup.bundle", "kubectl_kvbackup/bundle.py",
               ("tests/test_bundle_pins.py", "tests/test_bundle.py")),
    "admission": ("kvbackup_webhook.admission", "webhook/admission.py", ("tests/test_webhook.py",)),
}

#: (module, function, operator, source of the changed code) -> why no behaviour changes
EQUIVALENT: dict[tuple[str, str, str, str], str] = {
    **{("admission", function, "remove", "return None"): "the function returns None when it falls off its end"
       for function in ("owner_problem", "namespace_labels", "owner_uid")},
    **{("bundle", "__exit__", operator, source): "an abandoned archive is deleted right after: whether its end blocks "
       "are written does not matter, and CPython closes a file object once its last reference goes"
       for operator, source in (
           ("remove", "if self._tar is not None: with contextlib.suppress(Exception): self._tar.close() "
                      "self._tar = None"),
           ("flip", "self._tar is not None"), ("negate", "self._tar is not None"),
           ("remove", "with contextlib.suppress(Exception): self._tar.close()"), ("remove", "self._tar.close()"),
           ("remove", "self._tar = None"),
           ("remove", "if self._archive is not None: self._archive.close() self._archive = None"),
           ("remove", "self._archive.close()"), ("remove", "self._archive = None"))},
    **{("bundle", function, operator, source): "the archive's bytes are the same whichever way they are buffered on "
       "the way to gzip, and it is still handed over a chunk at a time or sooner: the members, their order and their "
       "padding do not change"
       for function, operator, source in (
           ("_write", "flip", "len(data) >= self.CHUNK"), ("_write", "negate", "len(data) >= self.CHUNK"),
           ("_write", "remove", "if len(data) >= self.CHUNK: # the index, megabytes: compressed as it is rather than "
                                "copied on the way self._flush() self"),
           ("_write", "flip", "self._pending_size >= self.CHUNK"),
           ("_write", "negate", "self._pending_size >= self.CHUNK"),
           ("add_file", "flip", "len(data) < self.CHUNK"), ("add_file", "negate", "len(data) < self.CHUNK"))},
    ("bundle", "_header", "negate", "size >= 8 ** 11"): "every header from tarfile itself: the same bytes as the "
    "stamped template (the tarfile byte-equality test), only slower",
    **{("bundle", function, "remove", source): "CPython closes (and so finishes) a gzip stream or file object once its "
       "last reference goes, and flushes stdout at exit; an assert only narrows a type"
       for function, source in (
           ("close", "self._gzip.close()"), ("commit", "self._tar = None"),
           ("commit", "assert self._archive is not None"), ("commit", "assert stdout is not None"),
           ("commit", "stdout.flush()"), ("commit", "self._archive.close()"), ("commit", "self._archive = None"))},
    **{(module, function, "remove", "return None"): "the function returns None when it falls off its end"
       for module, function in (("rules.identity", "_vmi_spec"), ("edges", "controller_of"))},
    ("admission", "__init__", "remove", "super().__init__(message)"):
        "LookupFailed: BaseException.__new__ has kept the message in args already, so str() says the same",
}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int
    line: int
    function: str
    operator: str
    source: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.module, self.function, self.operator, self.source

    def __str__(self) -> str:
        return f"{MODULES[self.module][1]}:{self.line} in {self.function}: {self.operator} `{self.source}`"


_NEGATED = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
            ast.IsNot: ast.Is, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt}


class _Mutator(ast.NodeTransformer):
    """Walks a module counting the places a mutation applies; with ``target`` set, changes that one place."""

    def __init__(self, source: str, target: int | None = None):
        self.source, self.target = source, target
        self.found: list[tuple[int, str, str, str]] = []  # line, function, operator, source
        self._function = "<module>"

    def _candidate(self, node: ast.AST, operator: str) -> bool:
        segment = ""
        if self.target is None:  # describing the mutants; when making one, only its place counts
            segment = " ".join((ast.get_source_segment(self.source, node) or ast.unparse(node)).split())[:120]
        self.found.append((getattr(node, "lineno", 0), self._function, operator, segment))
        return len(self.found) - 1 == self.target

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        # only the body: defaults and annotations are not behaviour
        outer, self._function = self._function, node.name
        node.body = self._statements(node.body)
        self._function = outer
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def _statements(self, body: list[ast.stmt]) -> list[ast.stmt]:
        result = []
        for statement in body:
            # a constant alone (a docstring, a Protocol's ``...``) does nothing
            constant = isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            removable = not constant and not isinstance(statement, (ast.FunctionDef, ast.ClassDef, ast.Pass,
                                                                         ast.Global, ast.Nonlocal))
            if removable and self._candidate(statement, "remove"):
                result.append(ast.copy_location(ast.Pass(), statement))
            else:
                result.append(self.visit(statement))
        return result

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name, value in ast.iter_fields(node):
            if isinstance(value, list):
                if value and isinstance(value[0], ast.stmt) and self._function != "<module>":
                    setattr(node, name, self._statements(value))
                else:
                    setattr(node, name, [self.visit(v) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node

    def _flip(self, node: ast.AST, field: str) -> None:
        test = getattr(node, field)
        if self._function != "<module>" and self._candidate(test, "flip"):
            setattr(node, field, ast.copy_location(ast.UnaryOp(ast.Not(), test), test))

    def visit_If(self, node: ast.If) -> ast.AST:
        self._flip(node, "test")
        return self.generic_visit(node)

    visit_While = visit_IfExp = visit_If  # type: ignore[assignment]

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        for position, condition in enumerate(node.ifs):
            if self._function != "<module>" and self._candidate(condition, "flip"):
                node.ifs[position] = ast.copy_location(ast.UnaryOp(ast.Not(), condition), condition)
        return self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        if self._function != "<module>" and self._candidate(node, "and/or"):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        if len(node.ops) == 1 and type(node.ops[0]) in _NEGATED and self._function != "<module>" and \
                self._candidate(node, "negate"):
            node.ops = [_NEGATED[type(node.ops[0])]()]
        return self.generic_visit(node)


def mutants(module: str) -> list[Mutant]:
    source = _source(module)
    mutator = _Mutator(source)
    mutator.visit(ast.parse(source))
    return [Mutant(module, i, *found) for i, found in enumerate(mutator.found)]


def mutated_source(mutant: Mutant) -> str:
    source = _source(mutant.module)
    tree = _Mutator(source, mutant.index).visit(ast.parse(source))
    return ast.unparse(ast.fix_missing_locations(tree))


def _source(module: str) -> str:
    with open(os.path.join(REPO, MODULES[module][1]), encoding="utf-8") as f:
        return f.read()


def run_tests(module: str, mutant_file: str | None, timeout: float) -> bool:
    """True when the tests pass (the mutant survives)."""
    env = dict(os.environ)
    if mutant_file:
        env.update({_MODULE_VARIABLE: MODULES[module][0], _FILE_VARIABLE: mutant_file})
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.mutation_run",
               *MODULES[module][2]]
    try:
        return subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def sample(items: list[Mutant], limit: int | None) -> list[Mutant]:
    if limit is None or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def run_module(module: str, limit: int | None, timeout: float, jobs: int) -> Iterator[tuple[Mutant, bool]]:
    with tempfile.TemporaryDirectory() as folder:
        def run(mutant: Mutant) -> tuple[Mutant, bool]:
            path = os.path.join(folder, f"{mutant.index}-{os.path.basename(MODULES[module][1])}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(mutated_source(mutant))
            return mutant, run_tests(module, path, timeout)

        with ThreadPoolExecutor(jobs) as pool:
            yield from pool.map(run, sample(mutants(module), limit))


class _MutantFinder(importlib.abc.MetaPathFinder):
    """In the pytest run of one mutant: the module under test is loaded from the mutated file."""

    def __init__(self, name: str, path: str):
        self._name, self._path = name, path

    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != self._name:
            return None
        return importlib.util.spec_from_file_location(name, self._path)


if os.environ.get(_MODULE_VARIABLE):  # loaded by pytest as a plugin (-p benchmarks.mutation_run)
    sys.meta_path.insert(0, _MutantFinder(os.environ[_MODULE_VARIABLE], os.environ[_FILE_VARIABLE]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES),
                        help="repeatable; default: every module")
    parser.add_argument("--max-mutants", type=int, default=None, help="per module, an evenly spread sample")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for one mutant's tests")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--list-survivors", action="store_true")
    args = parser.parse_args()
    for module in args.module or sorted(MODULES):
        if not run_tests(module, None, args.timeout * 3):
            print(f"{module}: the tests fail without any mutant; fix them first")
            return 1
        started = time.monotonic()
        killed, survivors, equivalent = 0, [], []
        for mutant, survived in run_module(module, args.max_mutants, args.timeout, args.jobs):
            if mutant.key in EQUIVALENT:
                equivalent.append(mutant)
            elif survived:
                survivors.append(mutant)
            else:
                killed += 1
        counted = killed + len(survivors)
        share = 100.0 * killed / counted if counted else 100.0
        print(f"{module}: {share:.1f}% killed ({killed} of {counted}; {len(equivalent)} equivalent left out) "
              f"in {time.monotonic() - started:.0f}s")
        for mutant in equivalent:
            print(f"  equivalent: {mutant} ({EQUIVALENT[mutant.key]})")
        if args.list_survivors:
            for mutant in survivors:
                print(f"  survived: {mutant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
