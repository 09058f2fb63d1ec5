"""The layout docs/architecture.md describes is the one on disk: entry points alone at the top of
pipeline/, the library in sub-packages, and every module with its line in the map."""

from __future__ import annotations

import ast
import re

from conftest import REPO

PIPELINE = REPO / "pipeline"
MAP = (REPO / "docs" / "architecture.md").read_text()


def is_entry_point(text: str) -> bool:
    """`python -m pipeline.<name>`: a main() under @cli, run when the module is __main__."""
    tree = ast.parse(text)
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    wrapped = any(getattr(d, "id", None) == "cli" for m in mains for d in m.decorator_list)
    return wrapped and 'if __name__ == "__main__":' in text


def test_the_top_of_pipeline_holds_only_entry_points_and_sub_packages() -> None:
    library = [
        path.name
        for path in PIPELINE.glob("*.py")
        if path.name != "__init__.py" and not is_entry_point(path.read_text())
    ]
    assert library == [], f"library modules at the top of pipeline/: {library}"
    assert not (PIPELINE / "__init__.py").read_text().strip()


def test_every_module_has_its_line_in_the_architecture_map() -> None:
    modules = {path.stem for path in PIPELINE.glob("*.py") if path.stem != "__init__"}
    for package in (p for p in PIPELINE.iterdir() if (p / "__init__.py").is_file()):
        assert f"### `{package.name}/`" in MAP, f"docs/architecture.md: no section {package.name}/"
        modules |= {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    missing = sorted(m for m in modules if not re.search(rf"`{m}`", MAP))
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_the_map_names_no_module_that_is_gone() -> None:
    """A renamed or deleted module leaves no stale line behind."""
    rows = re.findall(r"^\| `(\w+)` \|", MAP, re.M)
    assert len(rows) > 30
    on_disk = {p.stem for p in PIPELINE.rglob("*.py")}
    assert sorted(set(rows) - on_disk) == []
