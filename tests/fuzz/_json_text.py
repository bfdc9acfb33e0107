"""Hostile JSON *text* for the fuzz suites: the hostile parts are written as text, so they
survive (a ``json.dumps`` of a dict cannot hold a duplicate key or a 5 000-digit literal).

A document is a skeleton (``{"moe": {"activation": @}}``, ``{"moe": @, "moe": @}``, ...)
whose ``@`` holes are filled with parts (key names, scalars, huge integers, small objects
with duplicate keys), maybe nested deep, maybe mutated.  Per-example cost is dominated by
data generation, so everything is drawn from precomputed pools plus a few integers (the
same approach as ``_fuzz_common``); only the hostile sizes (4 000 - 6 000 digits, 1 -
100 000 levels) are open-ended.

Each document is a pair ``(text, tags)``; the tags say which hostile element it holds, so a
test can insist on a refusal (and count its floor):

* ``huge_int``: an integer literal of more than 4 300 digits (CPython's int/str limit);
* ``dup``: a key given twice in one object;
* ``deep``: nesting 1 to 100 000 levels deep;
* ``malformed``: a syntax error (truncation, an inserted/removed character, a BOM, trailing
  garbage) -- anything may be refused then;
* ``nonfinite``: ``NaN`` / ``Infinity`` / ``1e999`` (JSON extensions Python accepts).
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from _hostile import huge_digit_strings

KEYS = ["moe", "linear", "ignore", "weight", "activation", "quant_method", "activation_scheme",
        "hidden_size", "", "moe ", "Moe", "\u00e9", "\x1b[31m", "\ud800", "a" * 300, "__proto__"]
NAMES = ["mxfp4_static", "mxfp8", "bf16", "fp8_per_block", "mxfp4", "kMxfp4Static", "MXFP8",
         "null", "", "re:.*", "re:(", "re:a{99999999999}", "lm_head", "*", "\u00e9"]

_NONE: frozenset[str] = frozenset()
_DUP = frozenset({"dup"})


def _tagged(texts, tags=_NONE) -> list[tuple[str, frozenset[str]]]:
    return [(t, tags) for t in texts]


_SCALARS = (
    _tagged(json.dumps(n) for n in NAMES + KEYS)
    + _tagged(["null", "true", "false", "0", "-0", "1.5", "1e308", "-1", "2880", "4294967296",
               "9" * 4300, "-" + "9" * 4300, "1" * 5000 + ".5", "1" * 5000 + "e-4999",
               '"\\ud800"', '"\\u0000"', '"\\u001b[31m"', '"\\u009b"', "[]", "{}"])
    + _tagged(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"], frozenset({"nonfinite"}))
    + _tagged(['"\x01"', "'moe'", "nul", "True", "01", "1.", ".5", "+1", "0x10", '"\\x41"',
               "undefined", "[,]", "{,}", '{"a" 1}', '{"a": 1,}'], frozenset({"malformed"}))
)
_OBJECTS = (
    _tagged(['{"weight": "mxfp4_static", "activation": "mxfp8"}', '{"activation": "bf16"}',
             '{"weight": null}', '["lm_head", "re:.*router.*"]', '{"moe": {"activation": null}}',
             '{"": {}}', '[[[[[]]]]]', '{"a": [1, {"b": [2]}]}'])
    + _tagged(['{"activation": "mxfp8", "activation": "bf16"}', '{"weight": 1, "weight": 1}',
               '{"a": 1, "b": 2, "a": 3}', '[{"x": 1, "x": 1}]', '{"": 1, "": 2}',
               '{"\\u0061": 1, "a": 2}'], _DUP)
)
_huge_int = huge_digit_strings(st).map(
    lambda d: (d, frozenset({"huge_int"}) if len(d) > 4300 else _NONE))
parts = st.one_of(st.sampled_from(_SCALARS), st.sampled_from(_OBJECTS), _huge_int)

# Skeletons: "@" is a hole for a part.  Duplicate keys in the skeleton itself are tagged.
_SKELETONS = (
    _tagged(["@", "[@]", "[@, @]", '{"moe": @}', '{"linear": @}', '{"ignore": @}',
             '{"moe": {"activation": @}}', '{"moe": {"weight": @}}',
             '{"moe": {"weight": @, "activation": @}}', '{"linear": @, "moe": @, "ignore": @}',
             '{"ignore": [@, @]}', '{"moe": {"activation": @}, "linear": {"weight": @}}',
             '{"moe": {"bogus": @}}', '{"bogus": @}', '{"moe": [@]}', '{"moe": {"activation": [@]}}'])
    + _tagged(['{"moe": @, "moe": @}', '{"moe": {"activation": @, "activation": @}}',
               '{"linear": @, "moe": {"weight": @}, "linear": @}', '{"ignore": @, "ignore": []}'],
              _DUP)
)
_OPENERS = ["[", '{"moe": ', '{"a": [', '{"moe": {"weight": ']
_CLOSERS = ["]", "}", "]}", "}}"]


#: (depth, opener): most documents are not nested; the rest 1 - 100 000 levels deep,
#: around the recursion limit (~1000) in particular.
_DEPTHS = [(0, 0)] * 24 + [(d, o) for d in (1, 50, 500, 998, 999, 1000, 1001, 2000, 3000,
                                           10_000, 100_000) for o in range(len(_OPENERS))]
_JUNK_CHARS = ["{", "}", "[", "]", ",", ":", '"', "\\", "\x00", "\x1b", "\ufeff", "\ud800", " ",
               "9", "e", "-"]


def _document(t) -> tuple[str, frozenset[str]]:
    (skeleton, stags), first, second, (depth, opener), op, n = t
    pieces = skeleton.split("@")
    text = pieces[0]
    tags = set(stags)
    for i, rest in enumerate(pieces[1:]):
        part, ptags = (first, second)[i % 2]
        text += part + rest
        tags |= ptags
    if depth:
        text = _OPENERS[opener] * depth + text + _CLOSERS[opener] * depth
        tags.add("deep")
    if op < 6:  # half of the documents: one syntax-level mutation
        pos = n % (len(text) + 1)
        c = _JUNK_CHARS[n % len(_JUNK_CHARS)]
        text = [text[:pos],                      # truncated
                text[:pos] + c + text[pos:],     # a character inserted
                text[:pos] + text[pos + 1:],     # a character removed
                "\ufeff" + text,                 # a BOM (json.loads refuses it in a str)
                text + c + "{}",                 # trailing garbage
                " \n\t" + text + "\r\n "][op]    # only blanks around: still valid
        if op != 5:
            tags.add("malformed")
    return text, frozenset(tags)


documents = st.tuples(st.sampled_from(_SKELETONS), parts, parts, st.sampled_from(_DEPTHS),
                      st.integers(0, 11), st.integers(0, 10 ** 6)).map(_document)
"""``(text, tags)`` of a hostile JSON document (see the module docstring)."""
