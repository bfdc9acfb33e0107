"""oracle.matrix: the bundled table's content and the validator's refusals (design §1, §4)."""

from __future__ import annotations

import ast
import copy
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from packaging.version import Version

from oracle import keys
from oracle.errors import MatrixError, OracleError
from oracle.keys import KEY_CONSTANTS
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX, Row, load_matrix, parse_matrix
from oracle.platforms import LIBRARIES
from oracle.selector import resolve_backend_name

# Every vLLM Mxfp4MoeBackend member named by the issue, with its activation key
# (None = BF16 activations).
VLLM_MEMBERS = {
    "FLASHINFER_TRTLLM_MXFP4_BF16": None,
    "FLASHINFER_TRTLLM_MXFP4_MXFP8": keys.kMxfp8Dynamic,
    "FLASHINFER_CUTLASS_MXFP4_BF16": None,
    "FLASHINFER_CUTLASS_MXFP4_MXFP8": keys.kMxfp8Dynamic,
    "CUTLASS_MXFP4_MXFP4": keys.kMxfp4Dynamic,
    "DEEPGEMM_MXFP4": keys.kFp8Dynamic128Sym,
    "TRITON": None,
    "TRITON_UNFUSED": None,
    "MARLIN": None,
    "BATCHED_MARLIN": None,
    "HUMMING": None,
    "AITER_MXFP4_BF16": None,
    "AITER_TRITON_MXFP4_BF16": None,
    "AITER_MXFP4_FP8": keys.kFp8StaticTensorSym,
    "AITER_MXFP4_MXFP4": keys.kMxfp4Dynamic,
    "AITER_TRITON_MXFP4_MXFP4": keys.kMxfp4Dynamic,
    "B12X_MXFP4_MXFP8": keys.kMxfp8Dynamic,
    "B12X_MXFP4_BF16": None,
    "FLASHINFER_MOE_EP_CUTEDSL": keys.kMxfp8Dynamic,
    "FLASHINFER_MOE_EP_DEEP_GEMM": keys.kFp8Dynamic128Sym,
    "XPU": None,
    "CPU": None,
    "EMULATION": None,
}


# ------------------------------------------------------------------ bundled table


@pytest.mark.parametrize("name, activation", sorted(VLLM_MEMBERS.items(), key=lambda kv: kv[0]))
def test_vllm_member_is_a_row(name, activation):
    row = MATRIX.by_name[name]
    assert isinstance(row, Row)
    assert row.weight == keys.kMxfp4Static
    assert row.activation == activation


def test_member_name_suffix_agrees_with_activation():
    for row in MATRIX.rows:
        if row.name.endswith("_BF16"):
            assert row.activation is None, row.name
        elif row.name.endswith("_MXFP8"):
            assert row.activation == keys.kMxfp8Dynamic, row.name


@pytest.mark.parametrize("row", MATRIX.rows, ids=lambda r: r.name)
def test_arch_sets_are_exact_names(row):
    assert row.archs, row.name
    for arch in row.archs:
        assert arch in ARCHS_IN_SCOPE, (row.name, arch)
        assert re.fullmatch(r"sm\d{2,3}|gfx[0-9a-f]{3,4}|xpu|cpu", arch), (row.name, arch)
    for arch, _ in row.arch_status:
        assert arch in row.archs


def test_ranks_are_unique():
    ranks = [r.rank for r in MATRIX.rows]
    assert len(ranks) == len(set(ranks))


def test_names_are_unique():
    names = [r.name for r in MATRIX.rows]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("row", MATRIX.rows, ids=lambda r: r.name)
def test_row_fields_are_from_the_vocabularies(row):
    assert row.status in ("supported", "experimental", "known_bad")
    assert set(row.libraries) <= set(LIBRARIES)
    assert row.activation is None or row.activation in KEY_CONSTANTS.values()
    assert row.activation_fns
    assert row.hidden_align > 0 and row.hidden_align % 32 == 0
    assert row.intermediate_align > 0 and row.intermediate_align % 32 == 0
    for _, st in row.arch_status:
        assert st.status in ("experimental", "known_bad")
        assert st.reason


@pytest.mark.parametrize("row", MATRIX.rows, ids=lambda r: r.name)
def test_every_row_is_reachable_by_name_and_family(row):
    assert row.name in resolve_backend_name(row.name.lower())
    assert row.name in resolve_backend_name(row.family)


def test_vendor_name_lists():
    assert MATRIX.names["flashinfer_trtllm"] == ("FLASHINFER_TRTLLM_MXFP4_BF16",
                                                 "FLASHINFER_TRTLLM_MXFP4_MXFP8")
    assert MATRIX.names["flashinfer_cutlass"] == ("FLASHINFER_CUTLASS_MXFP4_BF16",
                                                  "FLASHINFER_CUTLASS_MXFP4_MXFP8")
    assert MATRIX.names["flashinfer_trtllm_afp8"] == ("FLASHINFER_TRTLLM_MXFP4_MXFP8",)
    assert MATRIX.names["flashinfer_cutlass_afp8"] == ("FLASHINFER_CUTLASS_MXFP4_MXFP8",)


def test_triton_is_known_bad_on_sm110():
    assert MATRIX.by_name["TRITON"].status_on("sm110").status == "known_bad"
    assert MATRIX.by_name["TRITON"].status_on("sm110").reason


def test_bundled_text_reloads_to_an_equal_table():
    again = load_matrix()
    assert again.version == MATRIX.version
    assert again.rows == MATRIX.rows
    assert dict(again.names) == dict(MATRIX.names)
    assert again.adjustments == MATRIX.adjustments


def test_bundled_matrix_equals_a_fresh_tomllib_parse():
    text = resources.files("oracle.matrix").joinpath("mxfp4_moe.toml").read_text("utf-8")
    fresh = parse_matrix(tomllib.loads(text))
    assert MATRIX == fresh
    assert load_matrix() == fresh


def test_bundled_table_is_found_through_resources_when_not_a_plain_file(monkeypatch):
    from oracle.matrix import loader
    on_disk = loader.read_toml(None, loader._TABLE)
    def no_plain_file(*_args, **_kwargs):
        raise FileNotFoundError("inside a zip")

    monkeypatch.setattr(loader, "open", no_plain_file, raising=False)  # the loader's open only
    assert loader.read_toml(None, loader._TABLE) == on_disk


def test_derived_values_are_precomputed_not_cached():
    """Platforms, display order and auto orders are computed at load; no cache exists."""
    from oracle.matrix import loader
    for name in ("marshal", "lru_cache", "_bundled_document", "_cache_path", "_write_cache"):
        assert not hasattr(loader, name), name
    assert not hasattr(MATRIX, "_memo") and not hasattr(MATRIX, "_order_cache")
    row = MATRIX.by_name["FLASHINFER_TRTLLM_MXFP4_BF16"]
    assert row.platforms == frozenset({"cuda"})
    assert row.sorted_archs() == ["sm100", "sm103", "sm107"]
    assert isinstance(row.sorted_archs(), list)
    ranked = tuple(sorted(MATRIX.rows, key=lambda r: r.rank))
    assert MATRIX.auto_order("sm130") == ranked  # no adjustment names it: plain rank order
    assert MATRIX.auto_order("sm90") != ranked  # HUMMING moves before MARLIN
    assert MATRIX.auto_order("sm90") is MATRIX.auto_order("sm90")
    assert MATRIX.backend_names()[0] == "auto"


def test_loader_imports_only_lower_floors():
    """matrix/loader.py (floor 5) may import only oracle.errors, keys and platforms."""
    from oracle.matrix import loader
    tree = ast.parse(Path(loader.__file__).read_text("utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    oracle_modules = {m for m in imported if m == "oracle" or m.startswith("oracle.")}
    assert oracle_modules <= {"oracle.errors", "oracle.keys", "oracle.platforms"}


# ------------------------------------------------------------------ broken tables

BASE = '''
schema = 1
version = "test-1"

[names]
alpha = ["ALPHA_BF16", "ALPHA_MXFP8"]
beta = ["BETA"]

[[adjustment]]
archs = ["sm120"]
move = "BETA"
before = "ALPHA_BF16"

[[row]]
name = "ALPHA_BF16"
family = "alpha"
weight = "kMxfp4Static"
activation = "None"
archs = ["sm90", "sm100"]
libraries = ["flashinfer"]
min_versions = { flashinfer = "0.6.0" }
status = "supported"
rank = 10
auto = true
layout = "l1"
activation_fns = ["swiglu_oai"]
bias = true
expert_parallel = true
hidden_align = 128
intermediate_align = 128
pads = true
[row.arch_status.sm100]
status = "known_bad"
reason = "broken on sm100"
link = "https://example.invalid/1"

[[row]]
name = "ALPHA_MXFP8"
family = "alpha"
weight = "kMxfp4Static"
activation = "kMxfp8Dynamic"
archs = ["sm100"]
libraries = ["flashinfer"]
status = "experimental"
rank = 20
auto = false
layout = "l1"
activation_fns = ["swiglu"]
bias = false
expert_parallel = false
hidden_align = 256
intermediate_align = 64
pads = false

[[row]]
name = "BETA"
family = "beta"
weight = "kMxfp4Static"
activation = "None"
archs = ["sm120", "cpu"]
libraries = ["torch"]
status = "supported"
rank = 30
auto = true
layout = "l2"
activation_fns = ["swiglu_oai", "swiglu"]
bias = true
expert_parallel = true
hidden_align = 32
intermediate_align = 32
pads = false
'''


def _broken(old: str, new: str, *, nth: int = 1) -> str:
    """BASE with the ``nth`` occurrence of ``old`` replaced by ``new``."""
    assert BASE.count(old) >= nth, old
    head, sep, tail = BASE.partition(old)
    for _ in range(nth - 1):
        more_head, sep, tail = tail.partition(old)
        head += old + more_head
    return head + new + tail


def test_base_table_is_valid():
    m = load_matrix(BASE)
    assert [r.name for r in m.rows] == ["ALPHA_BF16", "ALPHA_MXFP8", "BETA"]
    assert [r.name for r in m.auto_order("sm120")] == ["BETA", "ALPHA_BF16", "ALPHA_MXFP8"]
    assert m.by_name["ALPHA_BF16"].status_on("sm100").status == "known_bad"


def _refuses(text: str) -> MatrixError:
    with pytest.raises(MatrixError) as info:
        load_matrix(text)
    err = info.value
    assert isinstance(err, OracleError) and isinstance(err, ValueError)
    assert isinstance(err.row, str) and err.row
    assert isinstance(err.field, str) and err.field
    assert str(err)
    return err


@pytest.mark.parametrize("field, bad", [("weight", '"kMxfp5Static"'),
                                        ("weight", '"mxfp4"'),
                                        ("weight", '"None"')])
def test_unknown_weight_key_name(field, bad):
    err = _refuses(_broken('weight = "kMxfp4Static"', f"weight = {bad}", nth=2))
    assert (err.row, err.field) == ("ALPHA_MXFP8", "weight")


def test_unknown_activation_key_name():
    err = _refuses(_broken('activation = "kMxfp8Dynamic"', 'activation = "kMxfp9Dynamic"'))
    assert (err.row, err.field) == ("ALPHA_MXFP8", "activation")


def test_empty_arch_set():
    err = _refuses(_broken('archs = ["sm100"]', "archs = []"))
    assert (err.row, err.field) == ("ALPHA_MXFP8", "archs")


@pytest.mark.parametrize("arch", [">=sm90", "sm90+", "sm90-sm120", "sm10x", "SM90", "9.0", "*"])
def test_range_like_arch(arch):
    err = _refuses(_broken('archs = ["sm120", "cpu"]', f'archs = ["sm120", "{arch}"]'))
    assert (err.row, err.field) == ("BETA", "archs")


def test_duplicate_rank():
    err = _refuses(_broken("rank = 30", "rank = 10"))
    assert err.row == "BETA"
    assert err.field == "rank"


def test_unknown_status():
    err = _refuses(_broken('status = "experimental"', 'status = "beta"'))
    assert (err.row, err.field) == ("ALPHA_MXFP8", "status")


def test_known_bad_arch_status_without_reason():
    err = _refuses(_broken('reason = "broken on sm100"\n', ""))
    assert err.row == "ALPHA_BF16"
    assert err.field.startswith("arch_status")
    assert err.field.endswith("reason")


def test_known_bad_arch_status_with_empty_reason():
    err = _refuses(_broken('reason = "broken on sm100"', 'reason = ""'))
    assert err.row == "ALPHA_BF16"
    assert err.field.startswith("arch_status")


def test_arch_status_for_an_arch_not_in_the_row():
    err = _refuses(_broken("[row.arch_status.sm100]", "[row.arch_status.sm120]"))
    assert err.row == "ALPHA_BF16"
    assert err.field.startswith("arch_status")


def test_unknown_library():
    err = _refuses(_broken('libraries = ["torch"]', 'libraries = ["torch", "cudnn"]'))
    assert (err.row, err.field) == ("BETA", "libraries")


def test_min_version_for_a_library_the_row_does_not_require():
    err = _refuses(_broken('min_versions = { flashinfer = "0.6.0" }',
                           'min_versions = { aiter = "0.1" }'))
    assert (err.row, err.field) == ("ALPHA_BF16", "min_versions")


def test_adjustment_moving_a_missing_row():
    err = _refuses(_broken('move = "BETA"', 'move = "GAMMA"'))
    assert err.row.startswith("adjustment")
    assert err.field == "move"


def test_adjustment_anchored_on_a_missing_row():
    err = _refuses(_broken('before = "ALPHA_BF16"', 'before = "GAMMA"'))
    assert err.row.startswith("adjustment")
    assert err.field == "before"


def test_adjustment_with_range_like_arch():
    err = _refuses(_broken('archs = ["sm120"]\nmove', 'archs = [">=sm120"]\nmove'))
    assert err.row.startswith("adjustment")
    assert err.field == "archs"


def test_names_entry_naming_a_missing_row():
    err = _refuses(_broken('beta = ["BETA"]', 'beta = ["BETA", "GAMMA"]'))
    assert err.row == "names.beta"


def test_row_whose_family_is_not_a_name():
    err = _refuses(_broken('family = "beta"', 'family = "gamma"'))
    assert (err.row, err.field) == ("BETA", "family")


def test_duplicate_row_name():
    err = _refuses(_broken('name = "BETA"', 'name = "ALPHA_BF16"'))
    assert err.row == "ALPHA_BF16"


def test_missing_required_field():
    err = _refuses(_broken('layout = "l2"\n', ""))
    assert (err.row, err.field) == ("BETA", "layout")


def test_unknown_field():
    err = _refuses(_broken('layout = "l2"\n', 'layout = "l2"\nflavour = "x"\n'))
    assert (err.row, err.field) == ("BETA", "flavour")


def test_unaligned_alignment():
    err = _refuses(_broken("hidden_align = 32", "hidden_align = 48"))
    assert (err.row, err.field) == ("BETA", "hidden_align")


def test_invalid_toml():
    _refuses(BASE + "\n[[row]\nname = \n")


def test_wrong_schema():
    err = _refuses(BASE.replace("schema = 1", "schema = 2"))
    assert err.field == "schema"


@pytest.mark.parametrize(
    "old, new, row, field",
    [
        pytest.param('name = "BETA"', "name = 5", None, "name", id="name-not-a-string"),
        pytest.param('weight = "kMxfp4Static"', 'weight = ["kMxfp4Static"]', "ALPHA_BF16",
                     "weight", id="weight-is-a-list"),
        pytest.param('activation = "kMxfp8Dynamic"', "activation = 3", "ALPHA_MXFP8",
                     "activation", id="activation-is-a-number"),
        pytest.param('min_versions = { flashinfer = "0.6.0" }', 'min_versions = "0.6.0"',
                     "ALPHA_BF16", "min_versions", id="min_versions-not-a-table"),
        pytest.param('min_versions = { flashinfer = "0.6.0" }',
                     'min_versions = { flashinfer = "latest" }', "ALPHA_BF16", "min_versions",
                     id="min_versions-non-numeric"),
        pytest.param('min_versions = { flashinfer = "0.6.0" }',
                     'min_versions = { flashinfer = 6 }', "ALPHA_BF16", "min_versions",
                     id="min_versions-a-number"),
        pytest.param('[row.arch_status.sm100]\nstatus = "known_bad"\nreason = "broken on sm100"\n'
                     'link = "https://example.invalid/1"\n', 'arch_status = "sm100"\n',
                     "ALPHA_BF16", "arch_status", id="arch_status-not-a-table"),
        pytest.param("rank = 30", 'rank = "30"', "BETA", "rank", id="rank-a-string"),
        pytest.param('auto = true\nlayout = "l2"', 'auto = 1\nlayout = "l2"', "BETA", "auto",
                     id="auto-not-a-bool"),
        pytest.param("pads = false\n", 'pads = false\nep_required = "yes"\n', "ALPHA_MXFP8",
                     "ep_required", id="ep_required-not-a-bool"),
    ],
)
def test_malformed_values_fail_with_matrix_error(old, new, row, field):
    err = _refuses(_broken(old, new))
    if row is not None:
        assert err.row == row
    assert err.field.startswith(field)


def test_row_level_known_bad_needs_a_reason():
    err = _refuses(_broken('status = "supported"\nrank = 30', 'status = "known_bad"\nrank = 30'))
    assert err.row == "BETA"
    assert err.field in ("note", "reason", "link", "status")


def test_row_level_known_bad_with_reason_and_link_loads():
    text = _broken('status = "supported"\nrank = 30',
                   'status = "known_bad"\nnote = "broken"\nlink = "https://example.invalid/2"\n'
                   'rank = 30')
    assert load_matrix(text).by_name["BETA"].status == "known_bad"


def test_parse_matrix_takes_a_parsed_document():
    import tomllib
    doc = tomllib.loads(BASE)
    m = parse_matrix(doc)
    assert m.version == "test-1"
    doc["row"][2]["archs"] = []
    with pytest.raises(MatrixError) as info:
        parse_matrix(doc)
    assert (info.value.row, info.value.field) == ("BETA", "archs")


# ------------------------------------------------------------------ the declared schema

NAMES_BLOCK = '[names]\nalpha = ["ALPHA_BF16", "ALPHA_MXFP8"]\nbeta = ["BETA"]\n'
ADJUSTMENT_BLOCK = '[[adjustment]]\narchs = ["sm120"]\nmove = "BETA"\nbefore = "ALPHA_BF16"\n'


def _top_level(block: str, line: str) -> str:
    """BASE with ``block`` removed and ``line`` as a top-level key instead."""
    assert block in BASE
    return BASE.replace(block, "").replace('version = "test-1"\n', f'version = "test-1"\n{line}\n')


@pytest.mark.parametrize("text, row, field", [
    pytest.param(_top_level(NAMES_BLOCK, "names = 0"), "<table>", "names", id="names-0"),
    pytest.param(_top_level(NAMES_BLOCK, 'names = "x"'), "<table>", "names", id="names-str"),
    pytest.param(_top_level(ADJUSTMENT_BLOCK, "adjustment = 0"), "<table>", "adjustment",
                 id="adjustment-0"),
    pytest.param(_top_level(ADJUSTMENT_BLOCK, "adjustment = [1]"), "adjustment#0", "adjustment",
                 id="adjustment-not-a-table"),
    pytest.param(_top_level(NAMES_BLOCK, 'names = { alpha = ["ALPHA_BF16", "ALPHA_MXFP8"], '
                            'Beta = ["BETA"] }'), "names.Beta", "name", id="names-alias-case"),
    pytest.param(_broken('beta = ["BETA"]', 'beta = ["BETA", 1]'), "names.beta", "members",
                 id="names-member-not-a-string"),
    pytest.param(_broken('beta = ["BETA"]', 'beta = ["BETA", "BETA"]'), "names.beta", "members",
                 id="names-duplicate-member"),
    pytest.param(_broken('beta = ["BETA"]', "beta = []"), "names.beta", "members",
                 id="names-empty"),
    pytest.param(_broken('move = "BETA"', "move = []"), "adjustment#0", "move", id="move-list"),
    pytest.param(_broken('before = "ALPHA_BF16"', "before = 3"), "adjustment#0", "before",
                 id="before-int"),
    pytest.param(_broken('before = "ALPHA_BF16"', 'before = "ALPHA_BF16"\nafter = "ALPHA_MXFP8"'),
                 "adjustment#0", "before/after", id="before-and-after"),
    pytest.param(_broken('before = "ALPHA_BF16"\n', ""), "adjustment#0", "before/after",
                 id="neither-before-nor-after"),
    pytest.param(_broken('before = "ALPHA_BF16"', 'before = "BETA"'), "adjustment#0", "before",
                 id="anchored-on-itself"),
    pytest.param(_broken('before = "ALPHA_BF16"', 'before = "ALPHA_BF16"\nwhen = "always"'),
                 "adjustment#0", "when", id="adjustment-unknown-key"),
    pytest.param(_broken('min_versions = { flashinfer = "0.6.0" }',
                         f'min_versions = {{ flashinfer = "{"1" * 5000}" }}'),
                 "ALPHA_BF16", "min_versions", id="min_versions-5000-digits"),
    pytest.param(_broken('min_versions = { flashinfer = "0.6.0" }',
                         'min_versions = { flashinfer = "²" }'),
                 "ALPHA_BF16", "min_versions", id="min_versions-superscript"),
    pytest.param(_broken('min_versions = { flashinfer = "0.6.0" }',
                         'min_versions = { flashinfer = "0.٦.0" }'),
                 "ALPHA_BF16", "min_versions", id="min_versions-arabic-indic-digit"),
    pytest.param(_broken('activation_fns = ["swiglu"]', "activation_fns = [1]"),
                 "ALPHA_MXFP8", "activation_fns", id="activation_fns-int"),
    pytest.param(_broken('activation_fns = ["swiglu"]', 'activation_fns = [""]'),
                 "ALPHA_MXFP8", "activation_fns", id="activation_fns-empty-name"),
    pytest.param(_broken('activation_fns = ["swiglu"]', "activation_fns = []"),
                 "ALPHA_MXFP8", "activation_fns", id="activation_fns-empty"),
    pytest.param(_broken('layout = "l2"\n', 'layout = "l2"\nflashinfer_runner = 3\n'),
                 "BETA", "flashinfer_runner", id="flashinfer_runner-int"),
    pytest.param(_broken('layout = "l2"\n', 'layout = "l2"\nflashinfer_config = ["C"]\n'),
                 "BETA", "flashinfer_config", id="flashinfer_config-list"),
    pytest.param(_broken('layout = "l2"', 'layout = ""'), "BETA", "layout", id="layout-empty"),
    pytest.param(_broken('layout = "l2"\n', 'layout = "l2"\nsource = [1]\n'), "BETA", "source",
                 id="source-list"),
    pytest.param(_broken('layout = "l2"\n', 'layout = "l2"\nnote = 1\n'), "BETA", "note",
                 id="note-int"),
    pytest.param(_broken('libraries = ["torch"]', 'libraries = ["torch", "torch"]'),
                 "BETA", "libraries", id="libraries-duplicate"),
    pytest.param(_broken('link = "https://example.invalid/1"\n',
                         'link = "https://example.invalid/1"\nflavour = "x"\n'),
                 "ALPHA_BF16", "arch_status.sm100.flavour", id="arch_status-unknown-key"),
    pytest.param(_broken('status = "known_bad"\nreason', 'status = "supported"\nreason'),
                 "ALPHA_BF16", "arch_status.sm100.status", id="arch_status-supported"),
    pytest.param(_broken('link = "https://example.invalid/1"', "link = 1"),
                 "ALPHA_BF16", "arch_status.sm100.link", id="arch_status-link-int"),
    pytest.param(_broken("[row.arch_status.sm100]", '[row.arch_status."SM100"]'),
                 "ALPHA_BF16", "arch_status.SM100", id="arch_status-non-canonical-arch"),
    pytest.param(_broken('layout = "l2"\n',
                         'layout = "l2"\nflashinfer_divergence = { sm90 = 1 }\n'),
                 "BETA", "flashinfer_divergence.sm90", id="divergence-reason-int"),
    pytest.param(_broken('layout = "l2"\n',
                         'layout = "l2"\nflashinfer_divergence = { "9.0" = "why" }\n'),
                 "BETA", "flashinfer_divergence.9.0", id="divergence-non-canonical-arch"),
    pytest.param(_broken('layout = "l2"\n', 'layout = "l2"\nflashinfer_divergence = "sm90"\n'),
                 "BETA", "flashinfer_divergence", id="divergence-not-a-table"),
    pytest.param(_broken("schema = 1\n", 'schema = 1\nflavour = "x"\n'), "<table>", "flavour",
                 id="top-level-unknown-key"),
    pytest.param(_broken("schema = 1", "schema = true"), "<table>", "schema", id="schema-true"),
    pytest.param(_broken("schema = 1", "schema = 1.0"), "<table>", "schema", id="schema-float"),
    pytest.param(_broken('version = "test-1"', 'version = ""'), "<table>", "version",
                 id="version-empty"),
    pytest.param(_broken("rank = 30", "rank = true"), "BETA", "rank", id="rank-bool"),
    pytest.param(_broken("hidden_align = 32", "hidden_align = true"), "BETA", "hidden_align",
                 id="align-bool"),
    pytest.param(_broken('name = "BETA"', 'name = "Beta"'), "Beta", "name", id="name-case"),
])
def test_schema_rejections(text, row, field):
    err = _refuses(text)
    assert (err.row, err.field) == (row, field)
    assert len(str(err)) < 600  # a 5000-digit value is quoted cut short, not in full


def test_toml_decode_error_names_the_table():
    err = _refuses(BASE + "\n[[row]\nname = \n")
    assert (err.row, err.field) == ("<table>", "toml")


def test_document_that_is_not_a_table():
    with pytest.raises(MatrixError) as info:
        parse_matrix(0)  # type: ignore[arg-type]
    assert info.value.row == "<table>"


@pytest.mark.parametrize("arch, canonical", [("SM90", "sm90"), ("9.0", "sm90"), ("sm_90", "sm90"),
                                             ("sm90a", "sm90"), ("cuda90", "sm90"), (" cpu", "cpu"),
                                             ("GFX950", "gfx950")])
def test_non_canonical_arch_spelling_is_refused_with_the_canonical_one(arch, canonical):
    err = _refuses(_broken('archs = ["sm120", "cpu"]', f'archs = ["sm120", "{arch}"]'))
    assert (err.row, err.field) == ("BETA", "archs")
    assert canonical in err.fix


def test_any_canonical_arch_is_accepted_even_out_of_scope():
    m = load_matrix(_broken('archs = ["sm120", "cpu"]', 'archs = ["sm120", "sm101", "gfx1200"]'))
    assert m.by_name["BETA"].platforms == frozenset({"cuda", "rocm"})
    assert m.by_name["BETA"].sorted_archs() == ["sm120", "gfx1200", "sm101"]


def test_min_versions_are_pep440_versions():
    m = load_matrix(_broken('flashinfer = "0.6.0"', 'flashinfer = "0.6.0rc1"'))
    ((lib, minimum),) = m.by_name["ALPHA_BF16"].min_versions
    assert lib == "flashinfer" and isinstance(minimum, Version)
    assert minimum < Version("0.6.0")


def _leaves(node, path=()):
    """Every (path, value) in a parsed document, tables and arrays included."""
    yield path, node
    children = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, child in children:
        yield from _leaves(child, (*path, key))


_DELETED = object()
_JUNK = [_DELETED, 0, -32, 1.5, True, "", "x", "None", [], [1], [""], {}, {"x": 1}, "1" * 5000,
         "²"]


def test_any_wrong_value_anywhere_is_a_matrix_error():
    """Replacing any value of the test table by junk gives a valid table or a MatrixError,
    never a TypeError, KeyError, ValueError or AttributeError from inside the loader."""
    base = tomllib.loads(BASE)
    paths = [p for p, _ in _leaves(base) if p]
    for path in paths:
        for junk in _JUNK:
            doc = copy.deepcopy(base)
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            if junk is _DELETED:
                del parent[path[-1]]
            else:
                parent[path[-1]] = junk
            try:
                parse_matrix(doc)
            except MatrixError as err:
                assert err.row and err.field, (path, junk)
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{path} = {junk!r:.40}: {type(exc).__name__}: {exc}")


def test_a_5000_digit_integer_in_the_table_is_a_matrix_error():
    from oracle.errors import MatrixError
    from oracle.matrix import load_matrix
    text = _bundled_text()
    huge = text.replace("rank = 10\n", "rank = " + "1" * 5000 + "\n", 1)
    assert huge != text
    with pytest.raises(MatrixError) as info:
        load_matrix(huge)
    assert (info.value.row, info.value.field) == ("<table>", "toml")


def _bundled_text() -> str:
    from importlib import resources
    return resources.files("oracle.matrix").joinpath("mxfp4_moe.toml").read_text("utf-8")
