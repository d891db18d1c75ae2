"""The commands the documentation tells a user to run exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _named_targets() -> set[str]:
    found: set[str] = set()
    for doc in DOCS:
        found |= set(re.findall(r"`make ([a-z][a-z-]*)", doc.read_text(encoding="utf-8")))
        found |= set(re.findall(r"^make ([a-z][a-z-]*)", doc.read_text(encoding="utf-8"), re.M))
    return found


def test_the_docs_name_make_targets() -> None:
    assert {"demo", "test", "bench", "bench-continual"} <= _named_targets()


def _makefile_rules(makefile: Path) -> set[str]:
    # A .PHONY entry without a rule makes `make NAME` do nothing and exit 0: read the rules.
    text = makefile.read_text(encoding="utf-8")
    return {
        name for line in re.findall(r"^([a-z][a-z -]*):(?!=)", text, re.M) for name in line.split()
    }


def test_every_make_target_the_docs_name_has_a_rule() -> None:
    assert sorted(_named_targets() - _makefile_rules(ROOT / "Makefile")) == []


def test_a_phony_name_without_a_rule_is_not_counted(tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(".PHONY: bench demo\ndemo: setup\n\techo hi\nX := 1\n", encoding="utf-8")
    assert _makefile_rules(makefile) == {"demo"}
