"""rank="measured": a profile (data) reorders eligible candidates inside one activation
tier by measured time, never across tiers, and says what it did -- or why it did not."""

from __future__ import annotations

import pytest

from oracle import ConfigError, Device, Environment, LayerSpec, SelectionRequest, select
from oracle.cli import main
from oracle.keys import kFp8DynamicTokenSym
from oracle.profile import Profile, load_profile, parse_profile

GPT_OSS = LayerSpec(hidden_size=2880, intermediate_size=2880, num_experts=32, top_k=4,
                    activation_fn="swiglu_oai", has_bias=True)


def profile_text(rows: list[tuple[str, str, int, float]], arch: str = "sm90",
                 flashinfer: str = "0.7.2.post1") -> str:
    head = f'''schema = 1
device = "NVIDIA H200"
arch = "{arch}"
date = "2026-12-02"
command = "python -m oracle.kernels.tune --out p.toml"
[libraries]
flashinfer = "{flashinfer}"
'''
    body = "".join(f'''[[measurement]]
backend = "{b}"
activation = "{a}"
experts = 32
hidden = 2880
intermediate = 2880
top_k = 4
tokens = {m}
graph_us = {us}
eager_us = {us * 1.1}
rel_error = {4e-2 if a != "None" else 3.6e-3}
''' for b, a, m, us in rows)
    return head + body


#: HUMMING bf16 faster than FlashInfer at M >= 256 only; HUMMING fp8/token fastest of all.
ROWS = [("FLASHINFER_CUTLASS_MXFP4_BF16", "None", 1, 73.2),
        ("FLASHINFER_CUTLASS_MXFP4_BF16", "None", 256, 347.1),
        ("HUMMING", "None", 1, 89.0), ("HUMMING", "None", 256, 300.0),
        ("HUMMING", "kFp8DynamicTokenSym", 256, 296.1)]


def req(tokens: int, profile: Profile | None, rank: str = "measured", **kw) -> SelectionRequest:
    env = Environment({"flashinfer": kw.pop("flashinfer", None), "humming": None,
                       "vllm_ops": None, "torch": None})
    return SelectionRequest(device=Device.parse(kw.pop("device", "sm90")), environment=env,
                            layer=GPT_OSS, rank=rank, profile=profile, batch_tokens=tokens, **kw)


@pytest.fixture(scope="module")
def prof() -> Profile:
    return parse_profile(profile_text(ROWS), "test profile")


def test_table_order_without_measured_ranking(prof):
    assert select(req(256, prof, rank="table")).backend == "FLASHINFER_CUTLASS_MXFP4_BF16"


def test_measured_ranking_picks_the_fastest_of_the_tier_at_the_nearest_m(prof):
    assert select(req(1, prof)).backend == "FLASHINFER_CUTLASS_MXFP4_BF16"
    sel = select(req(256, prof))
    assert sel.backend == "HUMMING" and sel.activation is None  # same (bf16) tier
    assert sel.eligible[:2] == ("HUMMING", "FLASHINFER_CUTLASS_MXFP4_BF16")
    assert select(req(300, prof)).backend == "HUMMING"  # nearest measured M is 256
    line = next(n for n in sel.notes if n.startswith("measured ranking"))
    assert "HUMMING 300.0 µs" in line and "FLASHINFER_CUTLASS_MXFP4_BF16 347.1 µs" in line
    assert "MARLIN unmeasured" in line  # unmeasured rows keep table order, after measured


def test_it_never_trades_precision_silently_but_says_what_would_be_faster(prof):
    sel = select(req(256, prof))
    assert sel.activation is None
    faster = next(n for n in sel.notes if "would be" in n)
    assert "HUMMING would be 1.01x faster" in faster and "fp8_per_token" in faster
    sel = select(req(256, prof, activation=kFp8DynamicTokenSym))
    assert sel.backend == "HUMMING" and sel.activation == kFp8DynamicTokenSym


def test_a_profile_of_another_machine_is_not_applied(prof):
    sel = select(req(256, prof, flashinfer="0.6.9"))
    assert sel.backend == "FLASHINFER_CUTLASS_MXFP4_BF16"
    assert any("not applied" in n and "flashinfer 0.7.2.post1" in n for n in sel.notes)
    other = parse_profile(profile_text(ROWS, arch="sm100"), "b200")
    sel = select(req(256, other))
    assert any("measured on sm100" in n for n in sel.notes)


def test_rank_measured_needs_a_profile_and_tokens_and_the_strict_policy(prof):
    with pytest.raises(ConfigError):
        req(256, None)
    with pytest.raises(ConfigError):
        req(None, prof)
    with pytest.raises(ConfigError):
        req(256, prof, policy="vllm-0.33")
    with pytest.raises(ConfigError):
        req(0, prof)
    with pytest.raises(ConfigError):
        req(256, prof, rank="fastest")


@pytest.mark.parametrize("mutate, path", [
    (lambda t: t.replace("schema = 1", "schema = 2"), "schema"),
    (lambda t: t.replace('arch = "sm90"', 'arch = "hopper"'), "arch"),
    (lambda t: t.replace("tokens = 1\n", "tokens = -1\n", 1), "tokens"),
    (lambda t: t.replace("graph_us = 73.2", "graph_us = nan", 1), "graph_us"),
    (lambda t: t.replace('activation = "None"', 'activation = "kBogus"', 1), "activation"),
    (lambda t: t.replace('flashinfer = "0.7.2.post1"', 'flashinfer = "x.y"'), "flashinfer"),
    (lambda t: t + "[[oops", "TOML"),
])
def test_a_broken_profile_is_a_config_error_naming_the_field(mutate, path):
    with pytest.raises(ConfigError) as info:
        parse_profile(mutate(profile_text(ROWS)), "p")
    assert path in str(info.value)


def test_cli_rank_measured_with_a_profile_file(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text(profile_text(ROWS))
    code = main(["select", "--device", "sm90", "--libraries", "flashinfer,humming,vllm_ops,torch",
                 "--rank", "measured", "--profile", str(path), "--batch-tokens", "256", "--json"])
    import json
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["backend"] == "HUMMING"
    assert data["request"]["rank"] == "measured" and data["request"]["batch_tokens"] == 256
    code = main(["select", "--device", "sm90", "--rank", "measured", "--profile", str(path),
                 "--batch-tokens", "many"])
    assert code == 2 and "--batch-tokens" in capsys.readouterr().err
    code = main(["select", "--device", "sm90", "--rank", "measured", "--profile",
                 str(tmp_path / "missing.toml"), "--batch-tokens", "1"])
    assert code == 2


def test_bundled_profile_loads_when_shipped():
    from oracle.profile import bundled_profiles
    if not bundled_profiles():
        pytest.skip("no bundled profile yet")
    p = load_profile("bundled")
    assert p.arch == "sm90" and p.measurements


def test_the_bundled_h200_profile_changes_a_decision_where_it_measured_a_difference():
    prof = load_profile("bundled")
    env = Environment.assume_all()

    def pick(tokens, rank="measured"):
        return select(SelectionRequest(device=Device.parse("sm90"), environment=env,
                                       layer=GPT_OSS, rank=rank,
                                       profile=prof if rank == "measured" else None,
                                       batch_tokens=tokens if rank == "measured" else None))

    table = pick(None, "table").backend
    measured = {m: pick(m).backend for m in (1, 16, 256, 4096)}
    assert table == "TRITON"  # first in the table; not measured (not on PyPI)
    for m, backend in measured.items():
        bf16 = [x for x in prof.measurements if x.tokens == m and x.experts == 32
                and x.activation is None and x.backend != "EMULATION"]
        assert backend == min(bf16, key=lambda x: x.us).backend, m  # the fastest measured BF16
    sel = pick(16)
    hint = next(n for n in sel.notes if "would be" in n)
    assert "--moe-backend flashinfer_cutlass_mxfp4_fp8_humming" in hint  # a pin-only row


def test_tune_refuses_without_a_cuda_gpu(capsys, monkeypatch):
    import oracle.probe as probe
    monkeypatch.setattr(probe, "detect_device", lambda *a, **k: Device.parse("cpu"))
    assert main(["tune", "--out", "p.toml"]) == 2
    assert "CUDA GPU" in capsys.readouterr().err
    assert main(["tune", "--out", "p.toml", "--tokens", "1,x"]) == 2
    assert main(["tune"]) == 2  # --out is required
