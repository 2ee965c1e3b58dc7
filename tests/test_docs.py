"""The README's guarantees name the tests that prove them: every test file and test
named there exists, so that a moved or renamed test cannot leave a promise unproven."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "architecture.md"]
TEST_FILE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?")
TEST_NAME = re.compile(r"`(?:\w+\.py::)?(test_\w+)")


def defined(name: str, files: list[Path]) -> bool:
    return any(re.search(rf"\bdef {name}\b", path.read_text()) for path in files)


def lines_naming_tests() -> list[tuple[str, int, str]]:
    return [
        (document.name, number, line)
        for document in DOCUMENTS
        for number, line in enumerate(document.read_text().splitlines(), 1)
        if "`tests/" in line or "`test_" in line
    ]


@pytest.mark.parametrize(("document", "number", "line"), lines_naming_tests())
def test_every_test_a_document_names_exists(document: str, number: int, line: str) -> None:
    files = []
    for path, name in TEST_FILE.findall(line):
        file = ROOT / path
        assert file.is_file(), f"{document}:{number} names {path}, which does not exist"
        files.append(file)
        if name:
            assert defined(name, [file]), f"{document}:{number}: no {name} in {path}"
    # A bare test name belongs to a file the same line names.
    for name in TEST_NAME.findall(line):
        assert files, f"{document}:{number} names {name} but no file for it"
        assert defined(name, files), f"{document}:{number}: {name} is in none of {files}"
