"""One source of kernel facts: every adapter serves exactly what its matrix row says.

Archs, activation key, activation functions, layout family and alignment come from
``oracle.matrix.MATRIX``; kernels/ writes none of them down (checked on the AST).
All on the CPU: arch acceptance is a pure function of the arch name.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from oracle.errors import ConfigError  # noqa: E402
from oracle.kernels import adapters as A  # noqa: E402
from oracle.kernels import moe as M  # noqa: E402
from oracle.kernels.checkpoint import random_gpt_oss_layer  # noqa: E402
from oracle.kernels.reference import GPT_OSS_SWIGLU, SILU_SWIGLU  # noqa: E402
from oracle.keys import kMxfp8Dynamic  # noqa: E402
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX  # noqa: E402
from oracle.platforms import Device  # noqa: E402

KERNELS = Path(A.__file__).resolve().parent
BACKENDS = sorted(A.ADAPTERS)
#: Every arch in scope, some well-formed ones no row covers, and other spellings.
CANDIDATE_ARCHS = tuple(ARCHS_IN_SCOPE) + ("sm87", "sm101", "sm130", "sm_90a", "10.0", "gfx1200")


def runnable_names(row) -> set[str]:
    """The row's archs where its kernel may run (status other than known_bad), by canonical name."""
    return {a for a in row.archs if row.status_on(a).status != "known_bad"}


def accepts(adapter, arch) -> bool:
    try:
        adapter.check_arch(arch)
    except A.KernelUnavailable:
        return False
    return True


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


# --------------------------------------------------------------------------- adapter == row


def test_every_adapter_serves_a_matrix_row(backend):
    assert backend in MATRIX.by_name
    ad = A.adapter_for(backend)
    assert ad.backend == backend and ad.row is MATRIX.by_name[backend]


def test_adapter_accepts_exactly_the_rows_runnable_archs(backend):
    row, ad = MATRIX.by_name[backend], A.adapter_for(backend)
    want = runnable_names(row)
    assert want, f"{backend}: no runnable arch in its row"
    got = {Device.parse(a).name for a in CANDIDATE_ARCHS if accepts(ad, a)}
    assert got == want
    # SM numbers too, and the same answer from the module-level pure function
    sms = {Device.parse(a).arch for a in want}
    assert set(ad.archs) == sms
    for a in CANDIDATE_ARCHS:
        d = Device.parse(a)
        if d.platform == "cuda":
            assert accepts(ad, d.arch) == (d.name in want), a


def test_known_bad_arch_is_refused_with_the_rows_reason():
    row = MATRIX.by_name["FLASHINFER_TRTLLM_MXFP4_BF16"]
    bad = [a for a in row.archs if row.status_on(a).status == "known_bad"]
    assert bad, "the TRT-LLM W4A16 row marks an arch known_bad (sm103); update this test if it no longer does"
    ad = A.adapter_for(row.name)
    for a in bad:
        with pytest.raises(A.KernelUnavailable) as info:
            ad.check_arch(a)
        assert "known_bad" in str(info.value.got) and row.status_on(a).reason in str(info.value.got)


def test_arch_check_is_pure_and_names_the_device():
    assert A.arch_check("B", "sm90", (90,)) == 90
    assert A.arch_check("B", 90, [90]) == 90
    with pytest.raises(A.KernelUnavailable) as info:
        A.arch_check("B", 80, (90, 100), device_name="fake A100")
    assert info.value.constraint == "run on sm90, sm100" and "sm80 (fake A100)" in str(info.value.got)
    for other in ("gfx942", "xpu", "cpu", "not-an-arch"):
        with pytest.raises(A.KernelUnavailable):
            A.arch_check("B", other, (90,))
    assert A.sm_number("sm_90a") == 90 and A.sm_number("gfx950") is None and A.sm_number("cpu") is None


def test_adapter_activation_matches_row(backend):
    row, ad = MATRIX.by_name[backend], A.adapter_for(backend)
    assert ad.activation_key == row.activation
    assert tuple(ad.activation_kinds) == tuple(row.activation_fns)
    for spec in (GPT_OSS_SWIGLU, SILU_SWIGLU):
        if spec.kind in row.activation_fns:
            assert A.adapter_for(backend, activation=spec).activation == spec
        else:
            with pytest.raises(A.KernelInputError):
                A.adapter_for(backend, activation=spec)


def test_adapter_layout_and_alignment_match_row(backend):
    row, ad = MATRIX.by_name[backend], A.adapter_for(backend)
    assert ad.layout == row.layout
    assert ad._prepare_layout is type(ad).layouts[row.layout]
    assert ad.hidden_alignment % row.hidden_align == 0
    assert ad.intermediate_alignment % row.intermediate_align == 0


def test_trtllm_act_names_come_from_the_rows():
    for backend in A.TrtllmMxfp4Adapter.serves:
        act = MATRIX.by_name[backend].activation_name
        assert A.TrtllmMxfp4Adapter(act=act).backend == backend
        assert A.TrtllmMxfp4Adapter(backend=backend).act == act


# --------------------------------------------------------------------------- a changed row reaches the kernels


def _row_like(row, **over):
    """A stand-in with the Row API the kernels read (name, archs, status_on, activation...)."""
    status = dict(over.pop("status", {}))
    fields = dict(name=row.name, archs=frozenset(over.pop("archs", row.archs)), activation=row.activation,
                  activation_fns=tuple(row.activation_fns), layout=row.layout, hidden_align=row.hidden_align,
                  intermediate_align=row.intermediate_align)
    fields.update(over)
    fields.setdefault("activation_name", "bf16" if fields["activation"] is None else "mxfp8")

    def status_on(arch):
        st = row.status_on(arch)
        return SimpleNamespace(status=status[arch], reason="test", link="") if arch in status else st

    return SimpleNamespace(status_on=status_on, **fields)


@pytest.fixture
def patched_row(monkeypatch):
    def patch(name, **over):
        table = dict(MATRIX.by_name)
        table[name] = _row_like(MATRIX.by_name[name], **over)
        fake = SimpleNamespace(by_name=table)
        monkeypatch.setattr(A, "MATRIX", fake)
        monkeypatch.setattr(M, "MATRIX", fake)
        return table[name]
    return patch


def test_changed_archs_reach_the_adapter(patched_row):
    patched_row("FLASHINFER_CUTLASS_MXFP4_MXFP8", archs={"sm100", "sm101"}, status={"sm100": "known_bad"})
    ad = A.adapter_for("FLASHINFER_CUTLASS_MXFP4_MXFP8")
    assert ad.archs == (101,)
    assert [a for a in ("sm100", "sm101", "sm103", "sm120") if accepts(ad, a)] == ["sm101"]


def test_changed_activation_fns_and_layout_reach_the_adapter(patched_row):
    patched_row("FLASHINFER_CUTLASS_MXFP4_BF16", activation_fns=("swiglu",))
    with pytest.raises(A.KernelInputError):
        A.adapter_for("FLASHINFER_CUTLASS_MXFP4_BF16")  # default: gpt-oss SwiGLU
    assert A.adapter_for("FLASHINFER_CUTLASS_MXFP4_BF16", activation=SILU_SWIGLU).activation_kinds == ("swiglu",)
    patched_row("FLASHINFER_CUTLASS_MXFP4_BF16", layout="marlin_repacked")
    with pytest.raises(A.KernelUnavailable, match="marlin_repacked"):
        A.adapter_for("FLASHINFER_CUTLASS_MXFP4_BF16")


def test_changed_activation_key_reaches_the_adapter_and_build_moe(patched_row):
    patched_row("FLASHINFER_CUTLASS_MXFP4_BF16", activation=kMxfp8Dynamic)
    with pytest.raises(A.KernelUnavailable):  # the SM90 W4A16 code has no MXFP8-activation path
        A.adapter_for("FLASHINFER_CUTLASS_MXFP4_BF16")
    weights = random_gpt_oss_layer(2, 64, 64, seed=0)
    with pytest.raises(ConfigError) as info:  # build_moe compares the selection with the row
        M.build_moe(SimpleNamespace(backend="FLASHINFER_CUTLASS_MXFP4_BF16", activation=None), weights)
    assert info.value.what == "selection.activation" and "mxfp8" in info.value.constraint


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_build_moe_checks_the_selection_against_the_row(backend_name):
    from oracle.keys import kInt8StaticChannelSym

    row = MATRIX.by_name[backend_name]
    # a key that is neither the row's nor one the row's kernel quantizes to itself
    other = next(k for k in (kMxfp8Dynamic, kInt8StaticChannelSym)
                 if k != row.activation and not row.applies(k)) if row.activation is None else None
    weights = random_gpt_oss_layer(2, 64, 64, seed=0)
    with pytest.raises(ConfigError) as info:
        M.build_moe(SimpleNamespace(backend=backend_name, activation=other), weights)
    assert info.value.what == "selection.activation" and row.activation_name in info.value.constraint


def test_build_moe_passes_a_requested_activation_to_the_adapter():
    """A key the row quantizes to itself reaches the adapter, which runs it or says precisely why not."""
    row = MATRIX.by_name["HUMMING"]
    if not row.applies(kMxfp8Dynamic):
        pytest.skip("the HUMMING row does not list kMxfp8Dynamic under requested_activations")
    weights = random_gpt_oss_layer(2, 64, 64, seed=0)
    with pytest.raises(M.KernelUnavailable) as info:
        M.build_moe(SimpleNamespace(backend="HUMMING", activation=kMxfp8Dynamic), weights)
    assert "WGMMA input scales" in str(info.value)


# --------------------------------------------------------------------------- no facts written in kernels/

#: SM numbers of the CUDA archs in scope (75, 80, ... 121).
SM_NUMBERS = frozenset(Device.parse(a).arch for a in ARCHS_IN_SCOPE if Device.parse(a).platform == "cuda")
_ARCH_STRING = re.compile(r"sm_?[0-9]{2,3}[af]?", re.IGNORECASE)
_ARCHY_NAME = re.compile(r"(^|_)(sm|archs?|capability|cc)($|_)", re.IGNORECASE)


def _int(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def fact_literals(source: str, backends: frozenset[str]) -> list[str]:
    """Arch facts and backend fact tables written as literals in ``source``.

    * a tuple/list/set literal whose elements are all SM numbers of in-scope archs
      (``(90,)``, ``{100, 103, 107}``);
    * a comparison of an arch-like name with an SM number (``sm == 90``, ``arch >= 100``);
    * a string that is exactly an arch name (``"sm90"``, ``"sm_100a"``) -- prose that
      mentions one (``"the SM90 kernel"``) is not;
    * a dict literal keyed by matrix row names whose values are all constants
      (a backend -> activation/arch table); a backend -> adapter-class map is code.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts:
            ints = [_int(e) for e in node.elts]
            if all(i is not None and i in SM_NUMBERS for i in ints):
                found.append(f"{where}: arch numbers {ints}")
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_int(s) in SM_NUMBERS for s in sides) and any(_ARCHY_NAME.search(_name_of(s)) for s in sides):
                found.append(f"{where}: arch comparison")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _ARCH_STRING.fullmatch(node.value.strip()):
                found.append(f"{where}: arch name {node.value!r}")
        elif isinstance(node, ast.Dict) and node.keys:
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if keys and any(k in backends for k in keys) and all(
                    isinstance(v, (ast.Constant, ast.Tuple)) and all(
                        isinstance(e, ast.Constant) for e in getattr(v, "elts", [v])) for v in node.values):
                found.append(f"{where}: backend fact table keyed by {keys}")
    return found


def test_fact_detector_is_precise():
    backends = frozenset(MATRIX.by_name)
    positives = {
        "archs = (90,)": 1, "archs = (100, 103, 107)": 1, "self.archs = [100, 107]": 1,
        "ok = sm in {100, 103}": 1, "if sm == 90: pass": 1, "if major_arch >= 100: pass": 1,
        "d = 'sm90'": 1, "d = 'SM_100a'": 1,
        "T = {'FLASHINFER_TRTLLM_MXFP4_MXFP8': 'mxfp8', 'FLASHINFER_CUTLASS_MXFP4_BF16': None}": 1,
    }
    for src, n in positives.items():
        assert len(fact_literals(src, backends)) == n, src
    negatives = textwrap.dedent('''
        """Docstring naming sm90 and SM100 kernels, (90,) in prose."""
        Tile(64, 16, 128, "Pingpong"); cluster = (1, 1, 1); pads = (0, 128)
        MAX = 100 * 1024 * 1024; mid = (0.25, 0.75, 1.25); codes = (80, 7)
        msg = f"sm{a}"; hint = "set FLASHINFER_CUDA_ARCH_LIST=9.0a"; n = count == 90
        ADAPTERS = {"FLASHINFER_CUTLASS_MXFP4_BF16": CutlassW4A16Sm90Adapter}
        kinds = ("swiglu_oai", "swiglu")
    ''')
    assert fact_literals(negatives, backends) == []


def test_no_arch_or_backend_fact_literals_in_kernels():
    backends = frozenset(MATRIX.by_name)
    files = sorted(KERNELS.rglob("*.py"))
    assert files and (KERNELS / "adapters.py") in files
    found = {str(p.relative_to(KERNELS)): hits for p in files if (hits := fact_literals(p.read_text(), backends))}
    assert found == {}, "kernel facts belong in matrix/mxfp4_moe.toml, not in kernels/"
