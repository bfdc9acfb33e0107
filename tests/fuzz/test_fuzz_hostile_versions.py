"""Fuzz library versions: ``Environment.parse("lib=VER")``, ``Environment({lib: VER})`` and
``oracle.platforms.parse_version`` on the same generated value.

Generated: PEP 440 forms (epochs, pre-, post-, dev-releases, local labels, and near misses
of each), versions with one non-ASCII digit (``²``, ``٩``, full-width ``９``: ``str.isdigit``
accepts them, PEP 440 does not), 4 000 - 6 000-digit numbers (across CPython's 4 300-digit
int/str limit), junk text and non-string values (ints, huge ints, tuples, floats, bytes).

Property: a canonical :class:`~packaging.version.Version` equal to what ``packaging`` reads,
or exactly a ConfigError whose ``path`` is ``libraries.<lib>``, whose message names it and
stays short (a 5 000-digit value is never echoed whole); the three entry points agree.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from packaging.version import InvalidVersion, Version

from _hostile import NON_ASCII_DIGITS, Floor, expect, huge_digit_strings
from oracle import ConfigError, Environment
from oracle.platforms import LIBRARIES, parse_version

# (spelling typed on the CLI, the library it names)
_LIBS = [(n, n) for n in LIBRARIES] + [("flashinfer-python", "flashinfer"),
                                       ("FlashInfer", "flashinfer"), ("triton-kernels",
                                                                      "triton_kernels")]

_release = st.lists(st.integers(0, 999).map(str), min_size=1, max_size=4).map(".".join)
_epoch = st.sampled_from(["", "", "", "1!", "0!", "!", "99999999999!", "-1!"])
_pre = st.sampled_from(["", "", "a1", "b2", "rc1", "rc", "alpha3", "beta", "c1", "pre2",
                        "preview1", "-rc.1", ".rc1", "RC1", "_a1", "rc-1", "a01"])
_post = st.sampled_from(["", "", ".post1", "-1", "post2", ".post", "-post3", ".rev1", ".r1",
                         "_post1", "-", ".post-1"])
_dev = st.sampled_from(["", "", ".dev0", "dev1", ".dev", "-dev2", "_dev", ".DEV3", ".dev-1"])
_local = st.sampled_from(["", "", "+cpu", "+cu121", "+abc.1-2_3", "+", "+.", "+\u00fc",
                          "+cpu+cpu", "+" + "a" * 70, "+CPU"])
_pep440 = st.tuples(_epoch, _release, _pre, _post, _dev, _local).map("".join)


def _insert(t: tuple[str, int, str]) -> str:
    text, pos, char = t
    pos %= len(text) + 1
    return text[:pos] + char + text[pos:]


def _swap_digit(t: tuple[str, int, str]) -> str:
    """One ASCII digit of ``text`` replaced by a non-ASCII digit (or one inserted)."""
    text, pos, char = t
    digits = [i for i, c in enumerate(text) if c.isascii() and c.isdigit()]
    if not digits:
        return _insert(t)
    i = digits[pos % len(digits)]
    return text[:i] + char + text[i + 1:]


_non_ascii = st.tuples(_pep440, st.integers(0, 64), st.sampled_from(NON_ASCII_DIGITS)).map(
    _swap_digit)
_huge = st.one_of(
    huge_digit_strings(st),
    st.tuples(huge_digit_strings(st), st.sampled_from(["0.", "1.", "1!", "0.7.", "v"]),
              st.sampled_from(["", ".1", "rc1", ".post1", "+cpu", ".dev0"]))
    .map(lambda t: t[1] + t[0] + t[2]),
)
_JUNK = ["", " ", "v0.7.2", "V1", " 0.7.2 ", "\t0.7.2\n", "0..7", ".7", "7.", "0.7.x", "latest",
         "*", "0.7.*", ">=0.7", "==0.7.2", "0.7.2; os_name", "\x00", "0.7.2\x00", "0.7.2\x1b[31m",
         "1" * 64, "1" * 65, "0." * 32, "1e5", "0x10", "-1", "+1", "0.7.2 rc1", "\u00e9",
         "\ud800", "1_000", "0.7.2=1", "=0.7.2", "0,7", "None", "null", "nan", "inf"]
_junk = st.one_of(st.sampled_from(_JUNK), st.text(max_size=12))
# Non-string values, by name: a failure report shows ``value('10**5000')``, not 5 000 digits.
_OBJECTS = {
    "None": None, "(0, 7, 2)": (0, 7, 2), "(0,)": (0,), "(10**9 - 1,)": (10 ** 9 - 1,),
    "(10**9,)": (10 ** 9,), "(2**64,)": (2 ** 64,), "(10**5000,)": (10 ** 5000,), "(-1,)": (-1,),
    "()": (), "(True,)": (True,), "(0, '7')": (0, "7"), "[0, 7, 2]": [0, 7, 2], "7": 7, "0": 0,
    "-1": -1, "10**5000": 10 ** 5000, "-10**5000": -10 ** 5000, "2**64": 2 ** 64, "0.7": 0.7,
    "nan": math.nan, "inf": math.inf, "b'0.7.2'": b"0.7.2", "bytearray(b'1')": bytearray(b"1"),
    "True": True, "{'v': 1}": {"v": 1}, "Version('0.7.2')": Version("0.7.2"),
    "Version('1!2.0rc1.post2.dev3+abc')": Version("1!2.0rc1.post2.dev3+abc"),
    "Version('0.6.9.0')": Version("0.6.9.0"), "Version('0.7.2.post1')": Version("0.7.2.post1"),
}


def value(name: str) -> object:
    """The non-string value named ``name`` (see _OBJECTS)."""
    return _OBJECTS[name]


# (kind, value): the kind says which hostile class the example belongs to.
versions = st.one_of(
    _pep440.map(lambda v: ("pep440", v)),
    _non_ascii.map(lambda v: ("non_ascii", v)),
    _huge.map(lambda v: ("huge", v)),
    _junk.map(lambda v: ("junk", v)),
    st.sampled_from(sorted(_OBJECTS)).map(value).map(lambda v: ("object", v)),
)


def _packaging(value: object) -> Version | None:
    """What packaging itself reads from a string the oracle accepted."""
    try:
        return Version(value)  # type: ignore[arg-type]
    except (InvalidVersion, TypeError, ValueError):
        return None


def _refusal(exc: BaseException, lib: str) -> None:
    expect(exc, ConfigError, exact=True)
    assert exc.path == f"libraries.{lib}", exc.path
    assert f"libraries.{lib}" in str(exc)
    assert len(str(exc)) < 400, f"message of {len(str(exc))} chars echoes the value"


def test_versions_on_every_entry_point():
    hostile = Floor("a non-ASCII digit, a huge number, a pre/post/dev/local form or junk", 0.3)
    refused = Floor("a refusal naming libraries.<lib>", 0.3)
    accepted = Floor("an accepted version", 0.05)
    non_ascii = Floor("a refused non-ASCII digit", 0.05)
    huge = Floor("a refused 4000-6000 digit number", 0.05)

    @given(st.sampled_from(_LIBS), versions)
    def check(spelled_lib, kind_value):
        spelled, lib = spelled_lib
        kind, value = kind_value
        hostile.add(kind != "pep440" or any(p in str(value) for p in "abcdepr+!-_"))

        # 1. parse_version
        try:
            got = parse_version(value, lib)
        except Exception as exc:  # noqa: BLE001 - the property decides
            _refusal(exc, lib)
            got = None
            refused.add()
            non_ascii.add(kind == "non_ascii")
            huge.add(kind == "huge")
        else:
            accepted.add()
            assert isinstance(got, Version)
            assert kind not in ("non_ascii", "huge"), f"accepted {value!r}"
            if isinstance(value, str):
                assert value.isascii() and got == _packaging(value), (value, got)
            assert parse_version(str(got), lib) == got  # canonical: prints as it parses

        # 2. Environment({lib: value}): the same verdict
        try:
            env = Environment({lib: value})
        except Exception as exc:  # noqa: BLE001
            _refusal(exc, lib)
            assert got is None and value is not None, f"parse_version accepted {value!r}"
        else:
            want = None if value is None else got
            assert value is None or got is not None, f"Environment accepted {value!r}"
            assert env.version(lib) == want and env.has(lib)

        # 3. Environment.parse("lib=VER"): the CLI's --libraries
        if not isinstance(value, str):
            return
        text = f"{spelled}={value}"
        try:
            env = Environment.parse(text)
        except Exception as exc:  # noqa: BLE001
            expect(exc, ConfigError, exact=True)
            if "," in value:  # a second item: any libraries.* field may be at fault
                assert exc.path.startswith("libraries"), exc.path
                return
            _refusal(exc, lib)
            assert value.strip(), f"a blank version is 'any version', got {exc!r}"
            try:
                parse_version(value.strip(), lib)
            except ConfigError:
                return
            raise AssertionError(f"Environment.parse refused {text!r}, parse_version "
                                 f"accepts {value.strip()!r}") from None
        if "," in value:
            return
        want = parse_version(value.strip(), lib) if value.strip() else None
        assert env.version(lib) == want
        assert Environment.parse(env.describe()) == env

    check()
    for floor in (hostile, refused, accepted, non_ascii, huge):
        floor.check()
