"""state/ is the pure core: it must not import the daemon or any I/O library."""

import ast
from pathlib import Path

import pytest

FORBIDDEN = {"daemon", "httpx", "watchfiles", "apscheduler", "PIL", "av"}
STATE = Path(__file__).parents[2] / "state"


@pytest.mark.parametrize("path", sorted(STATE.rglob("*.py")), ids=lambda p: p.name)
def test_state_imports_nothing_from_the_outside(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
