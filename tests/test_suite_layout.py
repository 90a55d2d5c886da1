"""The test suite's own layout (issue 21, item 8): helpers live in tests/support/ and no test module imports another
(or conftest), so any module runs alone; the end-to-end run is only ever reached from the slow tier."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_test_module_imports_another_or_conftest():
    offenders = {p.name: sorted(m for m in _imported_modules(p) if m.split(".")[0].startswith("test_")
                                or m == "conftest")
                 for p in sorted(TESTS.glob("test_*.py")) + sorted((TESTS / "support").glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_support_holds_no_tests():
    for path in (TESTS / "support").glob("*.py"):
        tree = ast.parse(path.read_text())
        tests = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                 and n.name.lower().startswith("test")]
        assert not tests, (path.name, tests)


def test_every_collected_test_of_the_end_to_end_run_is_marked_slow(request):
    # The `tiny` fixture is a whole `vugan run` (minutes): a test that takes it belongs to the slow tier.
    unmarked = [item.nodeid for item in request.session.items
                if "tiny" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None]
    assert unmarked == []
