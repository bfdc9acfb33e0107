"""``oracle.diff``: what changes between two setups, and ``mxfp4-oracle diff``.

Assertions are on the structured fields (``SetupDiff``, ``Outcome``, the JSON), checked
against ``select`` / ``explain`` of each side, never on the report's wording.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import oracle
from oracle import Deployment, Device, Environment, LayerSpec, SelectionRequest, explain, select
from oracle.cli import main, parse_argv
from oracle.diff import ABSENT, CandidateState, Outcome, SetupDiff, diff
from oracle.errors import ConfigError, NoEligibleBackend, OracleError
from oracle.request import POLICIES

sys.path.insert(0, str(Path(__file__).parent / "property"))  # the shared strategies
from strategies import NonTrivial, any_requests, requests

SM90, SM100 = Device.parse("sm90"), Device.parse("sm100")
ALL, NONE = Environment.assume_all(), Environment.none()
BASE = SelectionRequest(device=SM90, environment=ALL)


def _winner(request: SelectionRequest) -> tuple[str, str]:
    """What select() answers, as diff's winner key: the backend or the error class."""
    try:
        return ("ok", select(request).backend)
    except OracleError as exc:
        return ("error", type(exc).__name__)


def _fates(request: SelectionRequest) -> dict[str, tuple[str, str | None]]:
    """explain() as {backend: (verdict, reason)}; {} when the request cannot be evaluated."""
    try:
        return {v.backend: (v.verdict, v.reason.value if v.reason else None)
                for v in explain(request)}
    except OracleError:
        return {}


def _changes(d: SetupDiff) -> dict[str, tuple[CandidateState, CandidateState]]:
    return {c.backend: (c.before, c.after) for c in d.candidate_changes}


# ------------------------------------------------------------------ examples


def test_sm90_to_sm100_changes_the_winner():
    b = BASE.with_(device=SM100)
    d = diff(BASE, b)
    assert d.changed_inputs == {"device": ("sm90", "sm100")}
    assert d.winner_before.key == _winner(BASE) and d.winner_after.key == _winner(b)
    assert d.winner_changed and d.changed
    assert d.winner_after.backend == "FLASHINFER_TRTLLM_MXFP4_BF16"
    before, after = _changes(d)["FLASHINFER_TRTLLM_MXFP4_BF16"]
    assert (before.verdict, before.reason) == ("rejected", "arch_unsupported")
    assert before.detail  # the reason's detail travels with it
    assert (after.verdict, after.reason) == ("selected", None)
    old_winner = _changes(d)[d.winner_before.backend]
    assert old_winner[0].verdict == "selected" and old_winner[1].verdict != "selected"


def test_same_request_changes_nothing():
    d = diff(BASE, BASE)
    assert d.changed_inputs == {} and d.candidate_changes == ()
    assert not d.winner_changed and not d.changed
    assert d.winner_before == d.winner_after
    assert d.winner_before.backend == select(BASE).backend
    assert d.winner_before.candidate_count == len(explain(BASE))


def test_libraries_all_to_none_leaves_nothing_eligible():
    b = BASE.with_(environment=NONE)
    d = diff(BASE, b)
    assert d.changed_inputs == {"libraries": ("all", "none")}
    assert d.winner_before.ok and not d.winner_after.ok
    after = d.winner_after
    assert after.error == "NoEligibleBackend" and after.backend is None
    assert "library_missing" in after.reasons
    assert list(after.reasons) == sorted(set(after.reasons), key=list(oracle.Reason).index)
    assert after.fix and after.candidate_count == len(explain(b))
    # every candidate that could run on A is rejected for a missing library on B
    for name, (was, now) in _changes(d).items():
        assert now.verdict == "rejected"
        if was.verdict in ("selected", "eligible"):
            assert now.reason == "library_missing", name


def test_a_pin_that_fails_on_one_side():
    a = BASE.with_(device=SM100, moe_backend="flashinfer_trtllm")
    b = a.with_(device=SM90)
    d = diff(a, b)
    assert d.winner_before.backend == "FLASHINFER_TRTLLM_MXFP4_BF16"
    assert (d.winner_after.error, d.winner_after.reasons) == ("NoEligibleBackend",
                                                               ("arch_unsupported",))
    assert d.winner_changed
    with pytest.raises(NoEligibleBackend) as info:
        select(b)
    assert d.winner_after.fix == info.value.fix
    assert set(_changes(d)) == {"FLASHINFER_TRTLLM_MXFP4_BF16", "FLASHINFER_TRTLLM_MXFP4_MXFP8"}
    assert all(now.reason == "arch_unsupported" for _, now in _changes(d).values())


def test_both_sides_failing_alike_is_not_a_winner_change():
    a = BASE.with_(moe_backend="flashinfer_trtllm")  # sm90: every TRTLLM variant rejected
    d = diff(a, a.with_(environment=NONE))
    assert d.winner_before.error == d.winner_after.error == "NoEligibleBackend"
    assert not d.winner_changed and d.changed  # the libraries changed, nothing runs either way


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "strict"])
def test_policy_change_is_reported_without_error(policy):
    a = BASE.with_(device=Device.parse("sm103"))
    b = a.with_(policy=policy)
    d = diff(a, b)  # whatever the policy does today, the diff is computed
    assert d.changed_inputs == {"policy": ("strict", policy)}
    assert d.winner_before.key == _winner(a) and d.winner_after.key == _winner(b)
    assert d.winner_changed == (_winner(a) != _winner(b))
    fa, fb = _fates(a), _fates(b)
    assert set(_changes(d)) == {n for n in {*fa, *fb}
                                if fa.get(n, ("absent", None)) != fb.get(n, ("absent", None))}


def test_unknown_backend_on_one_side_the_other_still_reports():
    b = BASE.with_(moe_backend="no_such_kernel")
    d = diff(BASE, b)
    assert d.winner_before.backend == select(BASE).backend
    assert d.winner_after.error == "UnknownBackend" and d.winner_after.field == "moe_backend"
    assert d.winner_after.candidate_count == 0 and d.winner_changed
    # B evaluated no candidate: each of A's is absent there
    assert set(_changes(d)) == set(_fates(BASE))
    assert all(now == ABSENT for _, now in _changes(d).values())
    swapped = diff(b, BASE)
    assert all(was == ABSENT for was, _ in _changes(swapped).values())


def test_activation_conflict_on_one_side():
    b = BASE.with_(activation="mxfp8", checkpoint_activation="fp8_per_tensor_static")
    d = diff(BASE, b)
    assert d.winner_after.error == "ActivationConflict" and d.winner_before.ok
    assert set(d.changed_inputs) == {"activation", "checkpoint_activation"}


def test_layer_fields_are_compared_one_by_one():
    a = BASE.with_(layer=LayerSpec(hidden_size=2880, intermediate_size=2880, num_experts=32))
    d = diff(a, a.with_(layer=LayerSpec(hidden_size=2880, intermediate_size=2880,
                                        num_experts=128)))
    assert d.changed_inputs == {"layer.num_experts": (32, 128)}
    assert diff(BASE, a).changed_inputs["layer"][0] is None


def test_arguments_that_are_not_requests_are_refused():
    with pytest.raises(ConfigError) as info:
        diff(BASE, {"device": "sm90"})  # type: ignore[arg-type]
    assert info.value.path == "diff(b)"


def test_to_dict_is_json_and_mirrors_the_fields():
    a = BASE.with_(moe_backend="flashinfer_trtllm")
    d = diff(a, a.with_(device=SM100))
    data = json.loads(json.dumps(d.to_dict()))
    assert data["winner_changed"] is True and data["changed"] is True
    assert data["changed_inputs"] == {"device": {"before": "sm90", "after": "sm100"}}
    assert data["winner"]["before"]["error"] == "NoEligibleBackend"
    assert data["winner"]["before"]["reasons"] == ["arch_unsupported"]
    assert data["winner"]["after"]["backend"] == "FLASHINFER_TRTLLM_MXFP4_BF16"
    assert [c["backend"] for c in data["candidates"]] == [c.backend for c in d.candidate_changes]
    assert data["candidates"][0]["after"] == {"verdict": "selected", "reason": None, "detail": ""}
    assert data["requests"]["after"] == d.request_after.to_dict()
    assert isinstance(d.describe(), str) and isinstance(diff(BASE, BASE).describe(), str)


def test_diff_is_exported_and_outcomes_are_values():
    assert oracle.diff is diff and "diff" in oracle.__all__
    assert Outcome("X") == Outcome("X") and Outcome("X").key == ("ok", "X")


# ------------------------------------------------------------------ property


_policies = st.sampled_from(POLICIES)
#: (a, b): independent requests, or b = a with one field changed (the usual question).
_one_change = st.one_of(
    any_requests.map(lambda r: {"device": r.device}),
    any_requests.map(lambda r: {"environment": r.environment}),
    any_requests.map(lambda r: {"moe_backend": r.moe_backend}),
    # a layer from another request, its shard sizes left to the deployment
    any_requests.map(lambda r: {"layer": r.layer if r.layer is None else r.layer.__class__(
        **{**r.layer.to_dict(), "tp_size": None, "ep_size": None})}),
    any_requests.map(lambda r: {"deployment": r.deployment}),
    _policies.map(lambda p: {"policy": p}),
)
_pairs = st.one_of(
    st.tuples(any_requests, any_requests),
    st.tuples(requests(conflicts=True), requests(conflicts=True)),
    st.tuples(any_requests, _one_change).map(lambda t: (t[0], t[0].with_(**t[1]))),
    st.tuples(any_requests, _policies, _policies).map(
        lambda t: (t[0].with_(policy=t[1]), t[0].with_(policy=t[2]))),
)


def test_diff_properties():
    hits = NonTrivial("a pair whose winner changed", 0.1)

    @given(_pairs)
    def check(pair):
        a, b = pair
        assert not diff(a, a).changed  # a setup against itself: no change at all
        d = diff(a, b)  # never raises for either side
        assert d.winner_changed == (_winner(a) != _winner(b))
        assert (d.winner_before.key, d.winner_after.key) == (_winner(a), _winner(b))
        fa, fb = _fates(a), _fates(b)
        changed = {n for n in {*fa, *fb}
                   if fa.get(n, ("absent", None)) != fb.get(n, ("absent", None))}
        assert set(_changes(d)) == changed
        assert set(d.changed_inputs) <= {f"layer.{k}" for k in LayerSpec.__slots__} | \
            {f"deployment.{k}" for k in Deployment.__slots__} | set(a.to_dict())
        # swapping the sides swaps before and after, field by field
        s = diff(b, a)
        assert s.changed_inputs == {k: (new, old) for k, (old, new) in d.changed_inputs.items()}
        assert (s.winner_before, s.winner_after) == (d.winner_after, d.winner_before)
        assert _changes(s) == {k: (new, old) for k, (old, new) in _changes(d).items()}
        json.dumps(d.to_dict())
        if d.winner_changed:
            hits.add()

    check()
    hits.check()


# ------------------------------------------------------------------ the CLI


@pytest.fixture(autouse=True)
def _laptop(monkeypatch: pytest.MonkeyPatch):
    """This machine is a CPU laptop with FlashInfer and torch (no probing in tests)."""
    from oracle import model, probe
    laptop = Environment.parse("flashinfer=0.7.2.post1,torch=2.13.0")
    for mod in (probe, model):
        monkeypatch.setattr(mod, "detect_device", lambda index=None: Device("cpu", "cpu"))
        monkeypatch.setattr(mod, "detect_environment", lambda: laptop)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = _run(capsys, *argv, "--json")
    return code, json.loads(out), err


def test_cli_json_is_the_diff_of_the_two_requests(capsys):
    code, data, _ = _json(capsys, "--device", "sm90", "--libraries", "all", "--",
                          "--device", "sm100")
    assert code == 0
    assert data["changed_inputs"] == {"device": {"before": "sm90", "after": "sm100"}}
    assert data["winner_changed"] is True
    assert data["winner"]["after"]["backend"] == "FLASHINFER_TRTLLM_MXFP4_BF16"
    a = SelectionRequest(**_request_kwargs(data["requests"]["before"]))
    assert data["winner"]["before"]["backend"] == select(a).backend
    assert data["requests"]["after"]["libraries"] == "all"  # B keeps what it does not name


def _request_kwargs(d: dict[str, Any]) -> dict[str, Any]:
    return {"moe_backend": d["moe_backend"], "device": Device.parse(d["device"]),
            "environment": Environment.parse(d["libraries"]),
            "layer": LayerSpec.from_dict(d["layer"]) if d["layer"] else None,
            "policy": d["policy"]}


def test_cli_human_report(capsys):
    code, out, err = _run(capsys, "--device", "sm90", "--libraries", "all", "--",
                          "--device", "sm100")
    assert code == 0 and not err
    assert "FLASHINFER_TRTLLM_MXFP4_BF16" in out and select(BASE).backend in out
    assert all(len(line) <= 100 for line in out.splitlines())


def test_cli_b_inherits_a_and_overrides_only_what_it_names(capsys):
    code, data, _ = _json(capsys, "--device", "sm100", "--libraries", "all", "--moe-backend",
                          "flashinfer_trtllm", "--", "--quantization-config.moe.activation",
                          "mxfp8")
    assert code == 0
    assert data["changed_inputs"] == {"activation": {"before": None, "after": "mxfp8"}}
    after = data["requests"]["after"]
    assert (after["device"], after["moe_backend"]) == ("sm100", "flashinfer_trtllm")
    assert data["winner"]["after"]["backend"] == "FLASHINFER_TRTLLM_MXFP4_MXFP8"


def test_cli_policy_example(capsys):
    code, data, _ = _json(capsys, "--device", "sm103", "--", "--policy", "vllm-0.33")
    assert code == 0
    assert data["changed_inputs"] == {"policy": {"before": "strict", "after": "vllm-0.33"}}


def test_cli_one_side_without_a_winner_still_exits_0(capsys):
    code, data, _ = _json(capsys, "--device", "sm100", "--libraries", "all", "--moe-backend",
                          "flashinfer_trtllm", "--", "--device", "sm90")
    assert code == 0
    assert data["winner"]["after"]["error"] == "NoEligibleBackend"
    assert data["winner"]["before"]["backend"] == "FLASHINFER_TRTLLM_MXFP4_BF16"


def test_cli_target_in_b_replaces_libraries_in_a(capsys):
    code, data, err = _json(capsys, "--device", "sm90", "--libraries", "all", "--",
                            "--target", "vllm-0.33")
    assert code == 0
    assert data["requests"]["before"]["libraries"] == "all"
    assert data["requests"]["after"]["libraries"] not in ("all", "none")
    assert [line for line in err.splitlines() if line.startswith("note:")]


def test_cli_a_note_both_sides_share_is_said_once(capsys):
    code, _, err = _run(capsys, "--device", "sm90", "--", "--policy", "vllm-0.22")
    assert code == 0
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1


def test_cli_json_flag_after_the_separator(capsys):
    code, out, _ = _run(capsys, "--device", "sm90", "--libraries", "all", "--", "--json")
    assert code == 0 and json.loads(out)["changed"] is False


@pytest.mark.parametrize("argv", [
    ["--device", "sm90", "--", "--no-such-flag"],
    ["--device", "sm90", "--", "--device", "banana"],
    ["--device", "sm90", "--", "--quantization-config.moe.activation", "nope"],
    ["--device", "sm90", "--", "--policy", "vllm-9.9"],
    ["--device", "sm90", "--", "--target", "vllm-0.33", "--libraries", "all"],
    ["--device", "sm90", "--", "--device", "sm100", "--", "--device", "sm120"],
    ["--device", "sm90"],  # no "--": nothing to compare
], ids=repr)
def test_cli_bad_input_exits_2_with_a_config_error(capsys, argv):
    code, data, _ = _json(capsys, *argv)
    assert code == 2
    assert data["error"] in ("ConfigError", "UnknownQuantKey")
    assert {"error", "message", "rejected"} <= set(data)
    code, out, err = _run(capsys, *argv)
    assert code == 2 and not out
    assert [line for line in err.splitlines() if line.startswith("error: ")]


def test_cli_parse_keeps_both_sides():
    args = parse_argv(["diff", "--device", "sm90", "--moe-backend", "marlin", "--",
                       "--device", "sm100"])
    assert args.command == "diff" and args.against is not None
    assert (args.options.device, args.options.moe_backend) == ("sm90", "marlin")
    assert (args.against.options.device, args.against.options.moe_backend) == ("sm100", "marlin")


def test_against_is_the_documented_separator(capsys):
    from oracle.cli import main
    assert main(["diff", "--device", "sm103", "--libraries", "all", "--against",
                 "--policy", "vllm-0.33", "--json"]) == 0
    import json
    data = json.loads(capsys.readouterr().out)
    assert data["winner_changed"] and data["changed_inputs"]["policy"]["after"] == "vllm-0.33"
