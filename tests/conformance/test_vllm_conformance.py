"""The oracle against vLLM's own selection code, case by case (issue: fidelity).

* ``vllm-0.33`` / ``vllm-0.22``: 100 % agreement with vLLM 0.33.0 / 0.22.0 on the
  whole grid -- the same winner with the same padding and the same BF16-fallback
  warning, or both fail and the oracle's error names vLLM's reason.
* ``strict``: every disagreement with vLLM 0.33 falls in one class of the closed list
  (``divergences.DIVERGENCES``, explained in docs/guide.md), and every class occurs.
* The per-variant vLLM facts of matrix/vllm.toml equal what each variant's experts
  classes answer when asked directly, for two layers and every library set.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import vllm_harness as H
from compare import case_answers, compare, default_key, summarize, table_lines
from conftest import REPORT
from divergences import DIVERGENCES, classify

from oracle import Device, Environment, LayerSpec, SelectionRequest, select
from oracle.keys import constant_name
from oracle.matrix import MATRIX, RELEASES
from oracle.vllm_rules import _verdict

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
POLICIES = {"vllm-0.33": "0.33.0", "vllm-0.22": "0.22.0"}


@pytest.fixture(scope="module")
def comparisons(vllm_table):
    out = {policy: compare(vllm_table, version, policy, H.GPT_OSS_20B_LAYER)
           for policy, version in POLICIES.items()}
    # Strict's divergence classes are about the one-GPU grid; the deployment axes are
    # proven under vllm-0.33 (strict applies the same experts-class records there).
    out["strict"] = compare(vllm_table, "0.33.0", "strict", H.GPT_OSS_20B_LAYER,
                            [(c, a) for c, a in case_answers(vllm_table, "0.33.0")
                             if _axes(c) == "tp only"])
    REPORT[:] = table_lines(list(out.values()))
    return out


def _axes(case) -> str:
    """The deployment axes a case sets beyond TP (its row in the per-axis table)."""
    parts = [name for name, on in (
        ("ep", getattr(case, "ep", False)), ("dp2", getattr(case, "dp", 1) > 1),
        ("deepep-ll", getattr(case, "all2all", None) == "deepep_low_latency"),
        ("eplb", getattr(case, "eplb", False)), ("lora", getattr(case, "lora", False)),
        ("routing", getattr(case, "routing", None) is not None),
        ("deepseek-v4", getattr(case, "family", "gpt-oss") == "deepseek-v4"),
        ("other-all2all", getattr(case, "all2all", None) not in (None, "deepep_low_latency")),
        ("checkpoint", getattr(case, "checkpoint", None) is not None)) if on]
    return "+".join(parts) or "tp only"


def test_vllm_033_agrees_on_every_deployment_axis(comparisons):
    c = comparisons["vllm-0.33"]
    axes = [r for r in c.rows if _axes(r[0]) != "tp only"]
    assert len(axes) >= 2000, len(axes)
    per: dict[str, list[int]] = {}
    for case, _, _, ok in axes:
        for axis in _axes(case).split("+"):
            per.setdefault(axis, [0, 0])
            per[axis][0] += 1
            per[axis][1] += ok
    REPORT.append("vllm-0.33 agreement per deployment axis (cases with that axis on):")
    REPORT.extend(f"  {axis:12s} {n:6d} cases {100 * k / n:7.2f}%"
                  for axis, (n, k) in sorted(per.items()))
    for axis in ("ep", "dp2", "deepep-ll", "eplb", "lora", "routing", "deepseek-v4"):
        assert axis in per, f"no {axis} case in the grid"
    assert all(ok for *_, ok in axes), "\n".join(summarize(axes, default_key, 25))


def test_the_flag_choices_are_vllms_own():
    """--all2all-backend and the routing methods: vLLM 0.33's literal and enum, read
    from the wheel's source."""
    import ast

    from oracle.deployment import ALL2ALL_BACKENDS, ROUTING_METHODS
    root = H.ensure_vllm_sources("0.33.0").root / "vllm"
    tree = ast.parse((root / "config" / "parallel.py").read_text())
    literal = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and getattr(node.targets[0], "id", None) == "All2AllBackend")
    assert tuple(e.value for e in literal.slice.elts) == ALL2ALL_BACKENDS
    tree = ast.parse((root / "model_executor" / "layers" / "fused_moe" / "config.py").read_text())
    enum = next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                and node.name == "RoutingMethodType")
    members = tuple(t.id for node in enum.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name))
    assert members == ROUTING_METHODS


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_vllm_policy_agrees_with_vllm_on_every_case(comparisons, policy):
    c = comparisons[policy]
    assert len(c.rows) >= 5000
    assert c.agreeing == len(c.rows), "\n".join(summarize(c.rows, default_key, 20))


def test_every_strict_divergence_is_a_documented_class(comparisons):
    c = comparisons["strict"]
    classes = Counter(classify(case, theirs, ours) for case, theirs, ours, ok in c.rows if not ok)
    unexplained = [default_key(case, t, o) for case, t, o, ok in c.rows
                   if not ok and classify(case, t, o) is None]
    assert not unexplained, "\n".join(unexplained[:20])
    assert {d.id for d in DIVERGENCES} == set(classes), classes  # every class is real
    REPORT.append("strict divergences from vLLM 0.33 by class:")
    REPORT.extend(f"  {classes[d.id]:6d}  {d.id}" for d in DIVERGENCES)


def test_the_guide_lists_every_divergence_class_with_its_vllm_source():
    text = GUIDE.read_text()
    section = text.split("## Where strict differs from vLLM", 1)
    assert len(section) == 2, "docs/guide.md needs the section"
    body = section[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", body, re.M)
    assert listed == [d.id for d in DIVERGENCES]
    for d in DIVERGENCES:
        assert d.vllm_source.split(";")[0].split(":")[0] in body, d.id


def _request(arch: str, libraries: frozenset[str], layer: dict) -> SelectionRequest:
    from compare import LIBRARY_NAMES, gpt_oss_layer
    env = Environment({LIBRARY_NAMES[name]: None for name in libraries})
    return SelectionRequest(device=Device.parse(arch), environment=env, layer=gpt_oss_layer(layer))


@pytest.mark.parametrize("version", sorted(RELEASES))
def test_variant_facts_equal_what_vllms_experts_classes_answer(vllm_class_probe, version):
    probe = vllm_class_probe[version]
    release = RELEASES[version]
    wrong = []
    checked = 0
    for arch, per_arch in probe.items():
        for layer_name, layer in H.PROBE_LAYERS.items():
            for libset, verdicts in per_arch["layers"][layer_name].items():
                req = _request(arch, H.PROBE_LIBRARY_SETS[libset], layer)
                for name, variant in release.variant.items():
                    row = MATRIX.by_name[name]
                    key = variant.key(row)
                    theirs = verdicts[name][str(None if key is None else constant_name(key))]
                    ours = _verdict(variant, row, req)
                    checked += 1
                    if (theirs["cls"] is not None) != (ours.reason is None):
                        wrong.append(f"{name} {arch} {layer_name} {libset}: vLLM "
                                     f"{theirs['cls'] or theirs['reasons'][:1]} / ours "
                                     f"{ours.reason}")
                    elif theirs["cls"] is not None and theirs["cls"] not in variant.experts:
                        wrong.append(f"{name} {arch}: vLLM builds {theirs['cls']}, not in "
                                     f"{variant.experts}")
    assert checked > 1000
    assert not wrong, "\n".join(wrong[:25])


@pytest.mark.parametrize("version", sorted(RELEASES))
def test_padding_equals_vllms_round_up_for_every_variant(vllm_class_probe, version):
    """The whole layer (TP 1) and the per-rank intermediate size under TP 2, 4, 8."""
    release = RELEASES[version]
    for arch, per_arch in vllm_class_probe[version].items():
        platform = Device.parse(arch).platform
        for name, variant in release.variant.items():
            h, i = variant.alignment(platform)
            ours = [-(-2880 // h) * h, -(-2880 // i) * i]
            assert per_arch["padding"][name] == ours, (version, arch, name)
            for tp, by_name in per_arch["padding_per_rank"].items():
                rank = 2880 // int(tp)
                assert by_name[name] == [-(-2880 // h) * h, -(-rank // i) * i], (
                    version, arch, name, tp)


@pytest.mark.parametrize("version", sorted(RELEASES))
def test_the_vllm_policy_pads_the_per_rank_intermediate_size(version):
    from compare import gpt_oss_layer
    policy = next(p for p, v in POLICIES.items() if v == version)
    layer = gpt_oss_layer(H.GPT_OSS_20B_LAYER)
    for tp in (1, 2, 8):
        req = SelectionRequest(device=Device.parse("sm90"), moe_backend="marlin",
                               environment=Environment.assume_all(), policy=policy,
                               layer=LayerSpec(**{**layer.to_dict(), "tp_size": tp}))
        assert select(req).padded == (3072, -(-(2880 // tp) // 128) * 128)


def test_quant_method_minimum_capability_is_vllms(vllm_table):
    for version, release in RELEASES.items():
        meta = vllm_table.meta[version]["sm90"]
        for method, cap in release.min_capability:
            assert meta["quant_min_capability"][method] == cap, (version, method)


def test_experts_class_records_equal_what_the_classes_answer(vllm_class_probe):
    """Every experts class's monolithic / format / LoRA / parallel-config / routing
    facts in matrix/vllm.toml, against the class asked directly on every parallel
    config of the probe (built with vLLM's own FusedMoEParallelConfig.make)."""
    from oracle import Deployment
    from oracle.deployment import ROUTING_METHODS
    release = RELEASES["0.33.0"]
    wrong, checked = [], 0
    for arch, per_arch in vllm_class_probe["0.33.0"].items():
        for name, facts in per_arch.get("classes", {}).items():
            ours = release.experts_class.get(name)
            if ours is None:
                wrong.append(f"{arch}: vLLM class {name} has no [experts_class] record")
                continue
            fmt = {"Standard": "standard", "BatchedExperts": "batched"}[facts["format"]]
            if (facts["monolithic"], fmt, facts["lora"]) != (ours.monolithic, ours.format,
                                                             ours.lora):
                wrong.append(f"{name}: vLLM {facts['monolithic'], fmt, facts['lora']} / ours "
                             f"{ours.monolithic, ours.format, ours.lora}")
            routing = set(facts["routing"])
            if routing != (set(ours.routing) or set(ROUTING_METHODS)):
                wrong.append(f"{name}: routing vLLM {sorted(routing)} / ours {ours.routing}")
            for key, accepted in facts["parallel"].items():
                flags = H.PROBE_PARALLEL[key]
                dep = Deployment(tensor_parallel_size=flags["tp"], data_parallel_size=flags["dp"],
                                 enable_expert_parallel=flags["ep"],
                                 all2all_backend=flags["all2all"] or "allgather_reducescatter",
                                 enable_eplb=flags["eplb"])
                refused = any(dep.holds(cond) for cond in ours.refuses)
                checked += 1
                if accepted == refused:
                    wrong.append(f"{name} {key}: vLLM accepts={accepted} / ours refuses "
                                 f"{[c for c in ours.refuses if dep.holds(c)]}")
    assert checked > 100
    assert not wrong, "\n".join(sorted(set(wrong))[:25])
