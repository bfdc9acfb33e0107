"""The user-facing CLI: answers for another machine, names as users type them, suggestions
that point the right way, output that fits, and the one exit-code scheme (0 / 2).

CLI tests run the commands (``oracle.cli.main`` in-process, a few through ``python -m``)
and assert on exit codes, JSON fields and the data-driven parts of the messages.  The
machine is faked: a laptop (CPU, FlashInfer and torch installed) unless a test says else.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import oracle
from oracle import Device, Environment
from oracle.cli import WIDTH, main
from oracle.errors import NoEligibleBackend, UnknownBackend
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX
from oracle.platforms import GPU_NAMES, LIBRARIES, PLATFORMS, gpu_arch

ROOT = Path(__file__).resolve().parents[1]
LAPTOP_ENV = Environment.parse("flashinfer=0.7.2.post1,torch=2.13.0")


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Fake this machine: ``machine(device, environment)``; a CPU laptop by default."""
    import oracle.model as model
    import oracle.probe as probe

    def set_machine(device: str = "cpu", environment: Environment = LAPTOP_ENV) -> None:
        def dev(index: int | None = None) -> Device:
            if index is not None and index > 1:
                raise RuntimeError("CUDA error: invalid device ordinal")
            return Device.parse(device)

        for mod in (probe, model):
            monkeypatch.setattr(mod, "detect_device", dev)
            monkeypatch.setattr(mod, "detect_environment", lambda: environment)

    set_machine()
    return set_machine


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = run(capsys, *argv, "--json")
    return code, json.loads(out), err


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# ------------------------------------------------------------------ answers for another machine

def test_another_device_assumes_a_deployment_not_this_laptop(machine, capsys):
    code, out, err = run_json(capsys, "select", "--device", "sm100", "--moe-backend", "marlin")
    assert code == 0
    assert out["backend"] == "MARLIN"
    assert out["request"]["libraries"] == "all"
    (line,) = notes(err)  # exactly one line says which set was assumed and how to change it
    assert "sm100" in line and "cpu" in line and "--libraries" in line and "every" in line


def test_another_device_agrees_with_the_docs(machine, capsys):
    code, out, err = run_json(capsys, "select", "--device", "sm90")
    assert code == 0 and out["backend"] == "TRITON"  # docs/support-matrix.md: sm90 none -> TRITON
    assert len(notes(err)) == 1


@pytest.mark.parametrize("argv", [[], ["--device", "sm90"], ["--device", "H100"],
                                  ["--device", "cuda"], ["--device", "cuda:0"],
                                  ["--device", "9.0"]])
def test_this_machines_own_device_keeps_the_probed_libraries(machine, capsys, argv):
    machine("sm90", Environment.parse("flashinfer,torch"))
    code, out, err = run_json(capsys, "select", *argv)
    assert code == 0
    assert out["request"]["device"] == "sm90"
    assert out["request"]["libraries"] == "flashinfer,torch"
    assert out["backend"] == "FLASHINFER_CUTLASS_MXFP4_BF16"  # TRITON's library is absent
    assert notes(err) == []


def test_explicit_libraries_win_and_installed_means_probe(machine, capsys):
    code, out, err = run_json(capsys, "select", "--device", "sm100", "--libraries", "torch")
    assert out["request"]["libraries"] == "torch" and notes(err) == []
    code, out, err = run_json(capsys, "select", "--device", "sm100", "--libraries", "installed")
    assert out["request"]["libraries"] == LAPTOP_ENV.describe() and notes(err) == []


def test_cuda_means_this_machine_and_needs_one(machine, capsys):
    code, out, err = run(capsys, "select", "--device", "cuda")  # the laptop has no GPU
    assert code == 2 and "error: ConfigError" in err and "this machine: cpu" in err
    code, out, err = run(capsys, "select", "--device", "cuda:7")
    assert code == 2 and "Traceback" not in err
    machine("sm90")
    code, out, err = run(capsys, "select", "--device", "cuda:7")  # no such index
    assert code == 2 and "invalid device ordinal" in err and "Traceback" not in err


def test_a_machine_that_cannot_name_itself_is_not_the_device(machine, capsys, monkeypatch):
    import oracle.probe as probe
    from oracle.errors import ConfigError

    def broken(index=None):
        raise ConfigError("device", "a ROCm device with a gfx architecture name", "''", "gfx942")

    monkeypatch.setattr(probe, "detect_device", broken)
    code, out, err = run_json(capsys, "select", "--device", "sm100")
    assert code == 0 and out["request"]["libraries"] == "all"
    (line,) = notes(err)
    assert "unknown" in line


def test_the_note_names_the_targets_from_the_data(machine, capsys):
    from oracle.suggest import engine_table
    code, out, err = run(capsys, "select", "--device", "sm100")
    (line,) = notes(err)
    for name in engine_table()["target"]:
        assert name in line


def test_matrix_device_cuda_means_this_machine(machine, capsys):
    code, out, err = run(capsys, "matrix", "--device", "cuda")
    assert code == 2 and "this machine: cpu" in err
    machine("sm110")
    code, data, err = run_json(capsys, "matrix", "--device", "cuda:0")
    assert code == 0 and {r["backend"] for r in data} == \
        {r.name for r in MATRIX.rows if "sm110" in r.archs}
    code, out, err = run(capsys, "matrix", "--device", "sm130")  # no row: an empty table
    assert code == 0 and "0 rows" in out


def test_target_is_data_with_a_source():
    from oracle.suggest import engine_table
    targets = engine_table()["target"]
    assert "vllm-0.33" in targets
    for name, t in targets.items():
        assert t["source"] and t["note"] and t["version"]
        assert set(t["libraries"]) <= set(PLATFORMS)
        for platform, libs in t["libraries"].items():
            assert set(libs) <= set(LIBRARIES), (name, platform)
            assert len(set(libs)) == len(libs)
    vllm = targets["vllm-0.33"]
    assert "requirements/cuda.txt" in vllm["source"]
    assert {"flashinfer", "triton_kernels", "vllm_ops", "deep_gemm", "humming", "torch"} <= \
        set(vllm["libraries"]["cuda"])
    assert "aiter" in vllm["libraries"]["rocm"] and "aiter" not in vllm["libraries"]["cuda"]
    for left_out in ("cuda_tile", "b12x"):  # said in the note, not shipped by vLLM
        assert left_out not in vllm["libraries"]["cuda"] and left_out in vllm["note"]


def test_target_sets_the_libraries_of_a_release(machine, capsys):
    from oracle.suggest import engine_table
    cuda = engine_table()["target"]["vllm-0.33"]["libraries"]["cuda"]
    code, out, err = run_json(capsys, "select", "--device", "B200", "--target", "vllm-0.33")
    assert code == 0
    assert out["request"]["libraries"] == Environment({n: None for n in cuda}).describe()
    (line,) = notes(err)
    assert "vllm-0.33" in line and "--libraries" in line
    rejected = {r["backend"]: r["reason"] for r in out["rejected"]}
    assert rejected["B12X_MXFP4_BF16"] in ("arch_unsupported", "library_missing")
    code, out, err = run_json(capsys, "select", "--device", "gfx950", "--target", "VLLM-0.33")
    assert out["backend"] == "AITER_MXFP4_BF16"  # the ROCm image ships AITER


@pytest.mark.parametrize("argv, offender", [
    (["--target", "vllm-0.3"], "vllm-0.3"),
    (["--target", "vllm-0.33", "--libraries", "all"], "--libraries"),
])
def test_bad_targets_are_errors(machine, capsys, argv, offender):
    code, out, err = run(capsys, "select", "--device", "sm90", *argv)
    assert code == 2 and offender in err and "Traceback" not in err
    if "vllm-0.3" == offender:
        assert "vllm-0.33" in err  # the close match


# ------------------------------------------------------------------ names as users type them

@pytest.mark.parametrize("text, arch", [
    ("H100", "sm90"), ("h100-sxm", "sm90"), ("H100 SXM5 80GB", "sm90"), ("h200", "sm90"),
    ("H20", "sm90"), ("GH200", "sm90"), ("NVIDIA H100 80GB HBM3", "sm90"),
    ("B200", "sm100"), ("GB200", "sm100"), ("B300", "sm103"), ("gb300", "sm103"),
    ("Jetson Thor", "sm110"), ("jetson-thor", "sm110"), ("RTX 5090", "sm120"),
    ("rtx_pro_6000", "sm120"), ("RTX PRO 6000 Blackwell", "sm120"), ("GB10", "sm121"),
    ("DGX Spark", "sm121"), ("L4", "sm89"), ("l40s", "sm89"), ("RTX 4090", "sm89"),
    ("NVIDIA GeForce RTX 4090", "sm89"), ("A100", "sm80"), ("a100-80gb", "sm80"),
    ("A10", "sm86"), ("RTX 3090", "sm86"), ("T4", "sm75"), ("MI300X", "gfx942"),
    ("AMD Instinct MI325X", "gfx942"), ("MI350X", "gfx950"), ("mi355x", "gfx950"),
    ("gfx950:sramecc+:xnack-", "gfx950"), ("gfx942:xnack+", "gfx942"),
])
def test_gpu_names_and_target_ids_resolve(text, arch):
    dev = Device.parse(text)
    assert dev.name == arch
    assert Device.parse(dev.name) == dev


def test_gpu_name_table_is_data_and_canonical():
    assert {"H100", "B200", "B300", "Jetson Thor", "RTX 5090", "RTX PRO 6000", "GB10",
            "DGX Spark", "L4", "L40S", "RTX 4090", "A100", "A10", "RTX 3090", "T4", "MI300X",
            "MI325X", "MI350X", "MI355X", "H200", "H20", "GH200", "GB200", "GB300"} <= \
        set(GPU_NAMES)
    for name, arch in GPU_NAMES.items():
        assert Device.parse(arch).name == arch and arch in ARCHS_IN_SCOPE, name
        assert gpu_arch(name) == arch and gpu_arch(name.lower().replace(" ", "-")) == arch


@pytest.mark.parametrize("junk", ["H100x", "sm 90", "nvidia", "gfx950:", "gfx950:xnack",
                                  "RTX", "cuda", "H١00"])
def test_near_names_stay_errors(junk):
    from oracle.errors import ConfigError
    with pytest.raises(ConfigError):
        Device.parse(junk)


def test_gpu_name_on_the_cli(machine, capsys):
    code, out, err = run_json(capsys, "select", "--device", "RTX 5090")
    assert code == 0 and out["request"]["device"] == "sm120"
    code, out, err = run(capsys, "matrix", "--device", "h100-sxm")
    assert code == 0 and "sm90" in out


@pytest.mark.parametrize("hf, bundled", [("openai/gpt-oss-20b", "gpt-oss-20b"),
                                         ("openai/gpt-oss-120b", "gpt-oss-120b"),
                                         ("OpenAI/GPT-OSS-120B", "gpt-oss-120b")])
def test_hugging_face_ids_resolve_to_the_bundled_configs(machine, capsys, hf, bundled):
    from oracle.model import load_model_config
    label, cfg = load_model_config(hf)
    assert cfg == load_model_config(bundled)[1] and bundled in label
    code, out, err = run_json(capsys, "select", "--model", hf, "--device", "sm100")
    assert code == 0 and bundled in out["model"]


def test_a_local_folder_named_like_a_hub_id_wins(tmp_path, monkeypatch):
    from oracle.model import load_model_config
    folder = tmp_path / "openai" / "gpt-oss-20b"
    folder.mkdir(parents=True)
    cfg = load_model_config("gpt-oss-120b")[1]
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    label, got = load_model_config("openai/gpt-oss-20b")
    assert got["num_local_experts"] == 128 and "bundled" not in label


# ------------------------------------------------------------------ suggestions

CHOICES = MATRIX.backend_names()


@pytest.mark.parametrize("name, arch, want", [
    ("flashinfer_mxfp4", "sm100", "flashinfer_trtllm"),   # SGLang, SM10x: TRT-LLM-gen
    ("flashinfer_mxfp4", "sm120", "flashinfer_cutlass"),  # SGLang, SM12x: CUTLASS
    ("flashinfer_mxfp4", None, "flashinfer_trtllm"),
    ("triton_kernel", None, "triton"),                    # SGLang's name for TRITON
    ("TRTLLM", None, "flashinfer_trtllm"),                # TensorRT-LLM
    ("trtllm", "sm100", "flashinfer_trtllm"),
    ("ck", None, "aiter"),                                # vLLM's ck
    ("flashinfer_trtlm", None, "flashinfer_trtllm"),      # a typo
    ("flashinfer", None, "flashinfer_trtllm"),            # a prefix: the first family
    ("flashinfer_trtllm_bf16", None, "flashinfer_trtllm"),  # a family plus more
])
def test_backend_suggestions_point_the_right_way(name, arch, want):
    from oracle.suggest import backend_suggestions, suggest_backend
    assert suggest_backend(name, CHOICES, MATRIX.names, arch) == want
    found = backend_suggestions(name, CHOICES, families=MATRIX.names, arch=arch)
    assert 1 <= len(found) <= 5 and found[0][0] == want


def test_flashinfer_mxfp4_without_an_arch_offers_both_kernels():
    from oracle.suggest import backend_suggestions
    found = dict(backend_suggestions("flashinfer_mxfp4", CHOICES, families=MATRIX.names))
    assert "sm120" in found["flashinfer_cutlass"] and "sm100" in found["flashinfer_trtllm"]


def test_alias_data_points_at_real_names():
    from oracle.suggest import backend_aliases
    aliases = backend_aliases()
    assert {"flashinfer_mxfp4", "triton_kernel", "trtllm", "cutlass"} <= set(aliases)
    for name, entries in aliases.items():
        for alias in entries:
            assert alias.source and alias.why and alias.engine
            for target, archs in alias.targets():
                assert target in MATRIX.names or target.upper() in MATRIX.by_name, (name, target)
                assert set(archs) <= set(ARCHS_IN_SCOPE)


def test_the_selector_carries_a_suggestion_for_unknown_names():
    """resolve_backend_name -> UnknownBackend(name, choices, suggestion); with the
    selector calling oracle.suggest.suggest_backend the alias data applies too."""
    from oracle.selector import resolve_backend_name
    with pytest.raises(UnknownBackend) as info:
        resolve_backend_name("triton_kernel")
    assert info.value.suggestion == "triton"  # not the pin-only LoRA path triton_unfused


@pytest.mark.parametrize("name, arch", [("trtllm", None), ("flashinfer_mxfp4", "sm120"),
                                        ("triton_kernel", None), ("nope-nope", None)])
def test_unknown_backend_on_the_cli_is_a_short_list(machine, capsys, name, arch):
    argv = ["select", "--moe-backend", name] + (["--device", arch] if arch else [])
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.splitlines()[next(i for i, l in enumerate(err.splitlines())
                                 if l.startswith("error: "))].startswith("error: UnknownBackend")
    assert "mxfp4-oracle matrix" in err
    named = set(re.findall(r"--moe-backend (\S+)", err))
    assert len(named) <= 5
    assert all(len(line) <= WIDTH for line in err.splitlines() if not line.startswith("note:"))
    assert not any(line.count(",") > 10 for line in err.splitlines())  # not 45 names on a line
    code, out, err = run_json(capsys, *argv)
    assert code == 2 and out["error"] == "UnknownBackend"
    assert set(MATRIX.backend_names()) <= set(out["choices"])
    assert [s["name"] for s in out["suggestions"]] == \
        [n for n in re.findall(r"--moe-backend (\S+)", _text_of(capsys, argv))]


def _text_of(capsys, argv) -> str:
    main(argv)
    return capsys.readouterr().err


def test_unknown_backend_suggestions_follow_the_device(machine, capsys):
    code, out, err = run_json(capsys, "select", "--moe-backend", "flashinfer_mxfp4",
                              "--device", "sm120")
    assert out["suggestions"][0]["name"] == "flashinfer_cutlass"
    code, out, err = run_json(capsys, "select", "--moe-backend", "flashinfer_mxfp4",
                              "--device", "B200")
    assert out["suggestions"][0]["name"] == "flashinfer_trtllm"


def test_a_name_another_engine_uses_differently_is_explained(machine, capsys):
    code, out, err = run(capsys, "select", "--device", "sm90", "--moe-backend", "CUTLASS")
    assert code == 2 and "UnknownBackend" in err  # not an MXFP4 MoE name, as in vLLM
    assert "--moe-backend flashinfer_cutlass  (TensorRT-LLM" in err


@pytest.mark.parametrize("typo, flag", [("--moe-backnd", "--moe-backend"),
                                        ("--quantisation", "--quantization"),
                                        ("--devices", "--device"), ("--libary", "--libraries"),
                                        ("--moe_backnd=marlin", "--moe-backend")])
def test_mistyped_flags_get_the_closest_flag(machine, capsys, typo, flag):
    code, out, err = run(capsys, "select", typo, "x" if "=" not in typo else "")
    assert code == 2 and "error: ConfigError" in err
    assert f"try: {flag} " in err and typo.split("=")[0] in err
    code, out, err = run(capsys, "matrix", "--devices", "sm90")
    assert "try: --device " in err


@pytest.mark.parametrize("upper, lower", [
    (["--libraries", "ALL"], ["--libraries", "all"]),
    (["--libraries", "FlashInfer,Torch"], ["--libraries", "flashinfer,torch"]),
    (["--quantization", "MXFP4"], ["--quantization", "mxfp4"]),
    (["--quantization-config.moe.activation", "MXFP8"],
     ["--quantization-config.moe.activation", "mxfp8"]),
    (["--quantization-config", '{"moe": {"activation": "MXFP8"}}'],
     ["--quantization-config", '{"moe": {"activation": "mxfp8"}}']),
    (["--quantization-config.moe.activation", "BF16"],
     ["--quantization-config.moe.activation", "bf16"]),
    (["--moe-backend", "FLASHINFER_TRTLLM"], ["--moe-backend", "flashinfer_trtllm"]),
])
def test_the_cli_reads_names_in_any_case(machine, capsys, upper, lower):
    base = ["select", "--device", "sm100", "--libraries", "all"]
    a = run_json(capsys, *base, *upper)
    b = run_json(capsys, *base, *lower)
    assert a[0] == b[0] == 0 and a[1] == b[1]


def test_case_insensitive_cli_but_case_sensitive_api_says_why():
    from oracle.errors import UnknownQuantKey
    from oracle.keys import parse_quant_key
    with pytest.raises(UnknownQuantKey) as info:
        parse_quant_key("MXFP8")
    assert info.value.suggestion == "mxfp8"


def test_activation_names_suggest_the_same_key():
    from oracle.errors import UnknownQuantKey
    from oracle.keys import parse_quant_key
    with pytest.raises(UnknownQuantKey) as info:
        parse_quant_key("mxfp8_dynamic")  # kMxfp8Dynamic's name is "mxfp8"
    assert info.value.suggestion == "mxfp8"
    with pytest.raises(UnknownQuantKey) as info:
        parse_quant_key("fp8_static_tensor_sym")
    assert info.value.suggestion == "fp8_per_tensor_static"


def test_unknown_activation_on_the_cli(machine, capsys):
    code, out, err = run(capsys, "select", "--device", "sm100",
                         "--quantization-config.moe.activation", "mxfp8_dynamic")
    assert code == 2 and "'mxfp8'" in err and "mxfp4_dynamic" not in err


# ------------------------------------------------------------------ output

def test_matrix_text_shows_the_status_per_arch(capsys):
    code, out, err = run(capsys, "matrix")
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines()[3:] if line.strip()}
    assert "sm103(known_bad)" in lines["FLASHINFER_TRTLLM_MXFP4_BF16"]
    assert "sm110(known_bad)" in lines["TRITON"]
    for row in MATRIX.rows:
        for arch in row.archs:
            st = row.status_on(arch).status
            shown = arch if st == row.status else f"{arch}({st})"
            assert re.search(rf"(^|\s){re.escape(shown)}(\s|$)", lines[row.name]), (row.name, arch)
    code, out, err = run(capsys, "matrix", "--device", "sm110")
    triton = next(line for line in out.splitlines() if " TRITON " in line)
    assert " known_bad " in triton
    code, data, err = run_json(capsys, "matrix", "--device", "sm110")
    assert next(r for r in data if r["backend"] == "TRITON")["status_on_device"] == "known_bad"


@pytest.mark.parametrize("argv", [
    ["--device", "sm100", "--libraries", "all"], ["--device", "sm90", "--libraries", "all"],
    ["--device", "gfx942", "--libraries", "all"], ["--device", "sm120", "--libraries", "all"],
    ["--device", "sm100", "--libraries", "all", "--quantization-config.moe.activation", "mxfp8"],
    ["--device", "gfx1250"], ["--device", "cpu", "--libraries", "none"],
    ["--device", "sm100", "--moe-backend", "flashinfer_cutlass", "--libraries",
     "flashinfer=0.7.2,torch,cuda_tile,cutlass_dsl,humming,vllm_ops,triton_kernels"],
])
def test_explain_fits_100_columns_and_json_is_complete(machine, capsys, argv):
    code, out, err = run(capsys, "explain", *argv)
    assert code in (0, 2)
    long = [line for line in out.splitlines() if len(line) > WIDTH]
    assert WIDTH == 100 and long == []
    jcode, data, _ = run_json(capsys, "explain", *argv)
    assert jcode == code
    for c in data["candidates"]:
        assert set(c) == {"position", "backend", "activation", "status", "verdict", "reason",
                          "detail"}
        assert c["backend"] in out  # every candidate is in the text too
        if c["detail"]:  # its detail too (wrapped, below the table)
            assert " ".join(c["detail"].split())[:40] in " ".join(out.split())


def test_no_eligible_json_has_structured_alternatives(machine, capsys):
    argv = ["select", "--device", "sm90", "--moe-backend", "flashinfer_trtllm",
            "--libraries", "all"]
    code, data, err = run_json(capsys, *argv)
    assert code == 2 and data["error"] == "NoEligibleBackend"
    from oracle.model import select_for_model
    with pytest.raises(NoEligibleBackend) as info:
        select_for_model("gpt-oss-20b", device="sm90", moe_backend="flashinfer_trtllm",
                         environment=Environment.assume_all())
    assert data["alternatives"] == list(info.value.alternatives) and data["alternatives"]
    assert data["working_archs"] == list(info.value.working_archs)
    assert data["pinned"] == "flashinfer_trtllm"
    code, data, err = run_json(capsys, "select", "--device", "sm130", "--libraries", "all")
    assert code == 2 and data["alternatives"] == [] and "sm100" in data["working_archs"]


def test_last_resort_is_said_in_one_line(machine, capsys):
    code, out, err = run(capsys, "select", "--device", "gfx942", "--libraries", "torch")
    assert code == 0 and "EMULATION" in out
    (line,) = warnings(err)
    assert "EMULATION" in line and "last-resort" in line and "gfx942" in line
    code, data, err = run_json(capsys, "select", "--device", "gfx942", "--libraries", "torch")
    assert data["backend"] == "EMULATION" and len(warnings(err)) == 1
    code, out, err = run(capsys, "explain", "--device", "gfx942", "--libraries", "torch")
    assert len(warnings(err)) == 1


def test_activation_fallback_is_said_in_one_line(machine, capsys):
    code, data, err = run_json(capsys, "select", "--device", "sm103", "--libraries", "all",
                               "--moe-backend", "flashinfer_trtllm")
    assert data["activation_fallback"] is True
    (line,) = warnings(err)
    assert "activation fallback" in line and data["backend"] in line
    # Without humming (which applies mxfp8 itself) and torch (EMULATION), only a BF16
    # stand-in is left.
    code, data, err = run_json(capsys, "select", "--device", "sm90",
                               "--libraries", "flashinfer,vllm_ops",
                               "--quantization-config.moe.activation", "mxfp8",
                               "--allow-activation-fallback")
    assert data["activation_fallback"] is True and len(warnings(err)) == 1


def test_a_plain_selection_has_no_warning(machine, capsys):
    code, data, err = run_json(capsys, "select", "--device", "sm100", "--libraries", "all")
    assert code == 0 and warnings(err) == []
    assert not MATRIX.by_name[data["backend"]].last_resort


def test_model_selection_describe(machine):
    from oracle.model import select_for_model
    ms = select_for_model("openai/gpt-oss-20b", device="sm100",
                          environment=Environment.assume_all())
    text = ms.describe()
    assert text.startswith(f"model {ms.model}: {len(ms.unquantized_modules)} module patterns")
    assert "lm_head" in text and ms.selection.describe() in text


def test_select_text_uses_describe(machine, capsys):
    from oracle.model import select_for_model
    code, out, err = run(capsys, "select", "--device", "sm100", "--libraries", "all")
    ms = select_for_model("gpt-oss-20b", device="sm100", environment=Environment.assume_all())
    assert out == ms.describe() + "\n"


# ------------------------------------------------------------------ help(oracle), import cost

def test_help_shows_the_lazy_entry_points():
    import pydoc
    assert {"select_for_model", "select_for_group"} <= set(dir(oracle))
    text = pydoc.render_doc(oracle, renderer=pydoc.plaintext)
    assert "select_for_model(" in text and "select_for_group(" in text
    assert "select_for_model" in oracle.__doc__ and "select_for_group" in oracle.__doc__


def test_dir_keeps_import_oracle_light():
    code = ("import sys, json, oracle; names = dir(oracle); "
            "print(json.dumps([m for m in ('torch', 'oracle.model', 'oracle.group', "
            "'oracle.probe', 'oracle.config', 'oracle.suggest') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


# ------------------------------------------------------------------ one exit-code scheme

@pytest.mark.parametrize("argv", [
    ["select", "--moe-backend", "trtllm"], ["select", "--devices", "sm90"],
    ["select", "--device", "cuda"], ["select", "--device", "H100x"],
    ["select", "--device", "sm90", "--target", "nope"], ["explain", "--device", "sm130"],
    ["matrix", "--device", "banana"], ["select", "--model", "openai/gpt-oss-7b"],
    ["select", "--libraries", "ALL,nope"], ["select", "--quantization", "MXFP"],
])
def test_failures_exit_2_without_a_traceback(argv):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "oracle.cli", *argv], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error: " in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "oracle.cli", *argv, "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert {"error", "message", "rejected"} <= set(json.loads(proc.stdout))


def test_success_exits_0_through_the_entry_point():
    proc = subprocess.run([sys.executable, "-m", "oracle.cli", "select", "--device", "B200"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "FLASHINFER_TRTLLM_MXFP4_BF16" in proc.stdout
    assert [line for line in proc.stderr.splitlines() if line.startswith("note:")]
