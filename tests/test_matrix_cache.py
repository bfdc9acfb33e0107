"""The parsed-TOML cache of the bundled matrix (matrix/loader.py) is only a faster
parse: it is used for byte-identical text only, never skips validation, and any
trouble with it falls back to tomllib."""

from __future__ import annotations

import marshal
import tomllib

import pytest

import oracle.matrix.loader as loader
from oracle.errors import MatrixError
from oracle.matrix import MATRIX, load_matrix, parse_matrix

TABLE = loader._read_bundled()[0]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Point the cache at a temporary file; the table is the bundled one unless replaced."""
    path = tmp_path / "pycache" / "mxfp4_moe.toml.test.marshal"
    monkeypatch.setattr(loader, "_cache_path", lambda folder: str(path))
    monkeypatch.setattr(loader, "_read_bundled", lambda: (TABLE, str(tmp_path)))
    monkeypatch.setattr(loader.sys, "dont_write_bytecode", False)
    return path


def use_table(monkeypatch, tmp_path, text: bytes) -> None:
    monkeypatch.setattr(loader, "_read_bundled", lambda: (text, str(tmp_path)))


def test_bundled_matrix_equals_a_fresh_tomllib_parse():
    fresh = parse_matrix(tomllib.loads(TABLE.decode("utf-8")))
    assert MATRIX == fresh
    assert load_matrix() == fresh


def test_miss_parses_and_writes_then_hit_reads_it(cache):
    assert not cache.exists()
    first = load_matrix()
    assert cache.exists()
    source, doc = marshal.loads(cache.read_bytes())
    assert source == TABLE and doc == tomllib.loads(TABLE.decode("utf-8"))
    assert load_matrix() == first == MATRIX


def test_stale_cache_is_ignored_and_replaced(cache, monkeypatch, tmp_path):
    load_matrix()  # cache for the bundled table
    edited = TABLE.replace(f'version = "{MATRIX.version}"'.encode(), b'version = "edited"', 1)
    assert edited != TABLE
    use_table(monkeypatch, tmp_path, edited)
    assert load_matrix().version == "edited"
    assert marshal.loads(cache.read_bytes())[0] == edited


def test_cached_document_is_still_validated(cache):
    doc = tomllib.loads(TABLE.decode("utf-8"))
    doc["row"][0]["status"] = "fine"  # invalid, but the cache claims this text parses to it
    cache.parent.mkdir(parents=True)
    cache.write_bytes(marshal.dumps((TABLE, doc)))
    with pytest.raises(MatrixError) as info:
        load_matrix()
    assert info.value.field == "status"


@pytest.mark.parametrize("blob", [b"", b"not marshal", marshal.dumps(["wrong", "shape", 3]),
                                  marshal.dumps((b"other text", {"schema": 1}))])
def test_unusable_cache_falls_back_to_tomllib(cache, blob):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(blob)
    assert load_matrix() == MATRIX
    assert marshal.loads(cache.read_bytes())[0] == TABLE  # rewritten


def test_no_write_when_bytecode_writing_is_off(cache, monkeypatch):
    monkeypatch.setattr(loader.sys, "dont_write_bytecode", True)
    assert load_matrix() == MATRIX
    assert not cache.exists()


def test_unwritable_cache_location_is_fine(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setattr(loader, "_cache_path", lambda folder: str(blocker / "sub" / "x.marshal"))
    monkeypatch.setattr(loader.sys, "dont_write_bytecode", False)
    assert load_matrix() == MATRIX
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no stray temp file


def test_broken_toml_is_a_matrix_error_and_never_cached(cache, monkeypatch, tmp_path):
    use_table(monkeypatch, tmp_path, TABLE + b"\n[[row]\n")
    with pytest.raises(MatrixError) as info:
        load_matrix()
    assert info.value.field == "toml"
    assert not cache.exists()


def test_crlf_table_reads_like_text_mode(cache, monkeypatch, tmp_path):
    use_table(monkeypatch, tmp_path, TABLE.replace(b"\n", b"\r\n"))
    assert load_matrix() == MATRIX
