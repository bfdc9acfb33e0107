"""oracle.matrix: the bundled table's content and the validator's refusals (design §1, §4)."""

from __future__ import annotations

import re

import pytest

from oracle import keys
from oracle.errors import MatrixError, OracleError
from oracle.keys import KEY_CONSTANTS
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX, Row, load_matrix, parse_matrix
from oracle.request import LIBRARIES
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
