# -*- test-case-name: tests.test_doc_includes -*-
"""
The device examples the docs show are files in the repository that the
tests build and run; a page shows such a file between two markers:

    <!-- include: examples/c/artcast_follow.c -->
    ```c
    ...the file's text, exactly...
    ```
    <!-- end include -->

These tests fail if a page's copy differs from the file (so the page shows
what is tested), or names a file that does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent

#: An included file: its path, then a fenced block, then the end marker.
INCLUDE = re.compile(
    r"<!-- include: (?P<path>[^ ]+) -->\n```[A-Za-z0-9+]*\n(?P<text>.*?)```\n<!-- end include -->",
    re.DOTALL,
)


def includes(page: Path) -> list[tuple[str, str]]:
    """
    The files a page includes: (path, the page's copy of the text).
    """
    return [(m["path"], m["text"]) for m in INCLUDE.finditer(page.read_text("utf-8"))]


class IncludeTests(SynchronousTestCase):
    """
    Every page's included files are shown exactly as they are.
    """

    def test_parse(self) -> None:
        """
        An include marker gives the path and the block's text.
        """
        page = Path(self.mktemp())
        page.write_text("x\n<!-- include: a/b.c -->\n```c\nint x;\n```\n<!-- end include -->\n")
        self.assertEqual(includes(page), [("a/b.c", "int x;\n")])

    def test_pagesShowTheFiles(self) -> None:
        """
        Each file a page in docs/ or the README includes exists and the
        page's copy is its text, byte for byte.
        """
        pages = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
        for page in pages:
            for path, text in includes(page):
                source = ROOT / path
                self.assertTrue(source.is_file(), f"{page.name} includes {path}, which is missing")
                self.assertEqual(
                    text, source.read_text("utf-8"),
                    f"{page.name}'s copy of {path} differs from the file: paste the file again",
                )
