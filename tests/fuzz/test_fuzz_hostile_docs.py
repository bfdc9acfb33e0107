"""Fuzz ``mxfp4-oracle docs [--check] --path P`` (``oracle.cli.main`` in-process).

``P`` is built in a scratch folder: random names (any characters a file name may hold:
control characters, blanks, non-ASCII, names of 255+ bytes, paths past PATH_MAX), existing
folders, paths under a regular file (one or more levels), NUL bytes, FIFOs and symlinks
to FIFOs, non-UTF-8 files, stale / up-to-date / CRLF pages, empty strings.

Property: exit status 0 or 2 and nothing raised (no traceback), no raw control character
written (the path is shown escaped, as every user value is), the right status for
what ``P`` is (a FIFO, a folder or a path through a file is 2; a fresh name in the
folder is written and then up to date), never a block, and nothing written outside the
scratch folder (the checkout's own docs page included).

The rendered page is memoised for the test (the ``memo_render`` fixture: it is a pure
function of the matrix and costs ~13 ms, the path handling under test ~0.1 ms).
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from _hostile import Floor, capture_cli, clear_folder, no_hang, raw_controls
from oracle.cli import main

_REPO_DOCS = Path(__file__).resolve().parents[2] / "docs" / "support-matrix.md"


_name_chars = st.characters(exclude_characters="/\x00", exclude_categories=("Cs",))
_names = st.one_of(
    st.text(_name_chars, min_size=1, max_size=30).filter(lambda n: n not in (".", "..")),
    st.sampled_from(["support-matrix.md", "x.md", " ", "-", "--check", "\x1b[31m.md", "\u00e9.md",
                     "a" * 255, "a" * 256, "b" * 300, ".hidden", "CON", "x.md\n"]),
)
#: (kind, relative path parts): what the path points at inside the scratch folder.
_FIXED = {
    "folder": ["dir"], "folder_slash": ["dir", ""], "scratch_itself": [""],
    "under_file": ["file.md", "x.md"], "under_file_deep": ["file.md", "sub", "x.md"],
    "fifo": ["fifo.md"], "link_to_fifo": ["link-fifo.md"], "not_utf8": ["latin1.md"],
    "stale": ["stale.md"], "up_to_date": ["fresh.md"], "crlf": ["crlf.md"],
    "link_to_fresh": ["link-fresh.md"], "dangling_link": ["dangling.md"],
    "in_new_folder": ["new", "deeper", "x.md"], "too_long": ["c" * 200] * 25 + ["x.md"],
}
_REFUSED = {"folder", "folder_slash", "scratch_itself", "under_file", "under_file_deep", "fifo",
            "link_to_fifo", "not_utf8", "too_long", "nul", "empty"}


def _populate(root: Path, page: str) -> None:
    (root / "dir").mkdir()
    (root / "file.md").write_text("a regular file\n")
    os.mkfifo(root / "fifo.md")
    (root / "link-fifo.md").symlink_to("fifo.md")
    (root / "latin1.md").write_bytes("caf\u00e9 \u00ff\n".encode("latin-1"))
    (root / "stale.md").write_text("old\n")
    (root / "fresh.md").write_text(page, newline="\n")
    (root / "crlf.md").write_bytes(page.replace("\n", "\r\n").encode())
    (root / "link-fresh.md").symlink_to("fresh.md")
    (root / "dangling.md").symlink_to("nowhere/x.md")


def _outside_state(root: Path) -> tuple:
    """What a write outside ``root`` would change: the scratch folder around it (which holds
    nothing else), the checkout's docs page (the default target) and the working folder."""
    st_docs = _REPO_DOCS.stat()
    cwd = sorted(n for n in os.listdir(Path.cwd()) if not n.startswith((".", "__pycache__")))
    return sorted(os.listdir(root.parent)), st_docs.st_mtime_ns, st_docs.st_size, cwd


def test_docs_path(scratch, memo_render):
    page = memo_render
    root = scratch / "docs"
    root.mkdir()
    before = _outside_state(root)
    hostile = Floor("a folder, FIFO, path under a file, NUL, non-UTF-8 or odd name", 0.3)
    written = Floor("a fresh name written, then up to date", 0.1)

    @given(st.one_of(st.sampled_from(sorted(_FIXED)), st.sampled_from(sorted(_FIXED)),
                     st.just("random"), st.just("random"), st.sampled_from(["nul", "empty"])),
           st.lists(_names, min_size=1, max_size=3))
    def check(kind, names):
        clear_folder(root)
        _populate(root, page)
        if kind == "random":
            path = os.path.join(root, *names)
        elif kind == "nul":
            path = os.path.join(root, names[0] + "\x00.md")
        elif kind == "empty":
            path = ""
        else:
            path = os.path.join(root, *_FIXED[kind])
        hostile.add(kind != "random" or any(not n.isprintable() or len(n) > 200 for n in names))
        codes = []
        for argv in (["docs", "--check", "--path", path], ["docs", "--path", path],
                     ["docs", "--check", "--path", path]):
            with capture_cli() as (out, err), no_hang(5, " ".join(argv[:2])):
                code = main(argv)
            assert code in (0, 2), (argv, code)
            assert "Traceback" not in err.getvalue()
            # the path is a user value: shown escaped, never as raw terminal controls
            found = raw_controls(out.getvalue()) + raw_controls(err.getvalue())
            assert not found, f"raw control characters written: {found[:3]}"
            if code == 2:
                assert err.getvalue(), "exit status 2 without a message"
            codes.append(code)
        assert _outside_state(root) == before, "something was written outside the scratch folder"
        if kind in _REFUSED:
            assert codes == [2, 2, 2], (kind, codes)
        elif kind in ("up_to_date", "crlf", "link_to_fresh"):
            assert codes == [0, 0, 0], (kind, codes)
        elif kind in ("stale", "in_new_folder"):
            assert codes == [2, 0, 0], (kind, codes)
        if codes[1:] == [0, 0]:
            target = Path(path)
            assert target.resolve().is_relative_to(root.resolve())
            assert target.read_text(encoding="utf-8").replace("\r\n", "\n") == page
            written.add()

    check()
    hostile.check()
    written.check()
