"""Small Hypothesis strategies for the selector, drawn from the matrix itself.

Property tests import this module as ``strategies`` (pytest puts this folder on
``sys.path``); nothing here pins Hypothesis settings, the active profile does.
"""

from __future__ import annotations

from nontrivial import NonTrivial  # noqa: F401 - re-exported for the clause files
from hypothesis import strategies as st
from packaging.version import Version

from oracle.keys import BF16, KEY_CONSTANTS, kMxfp4Static
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX
from oracle import Deployment, Device, Environment, LayerSpec, SelectionRequest
from oracle.deployment import ALL2ALL_BACKENDS, MODEL_FAMILIES, ROUTING_METHODS
from oracle.platforms import LIBRARIES

#: Every quant-key constant, in a stable order.
ALL_KEYS = tuple(KEY_CONSTANTS[name] for name in sorted(KEY_CONSTANTS))

#: Devices no row mentions (or mentions only as known_bad), in several spellings.
EXTRA_DEVICES = ("sm101", "sm110", "sm130", "9.0", "12.1", "gfx1200", "gfx90a")
DEVICE_NAMES = tuple(dict.fromkeys((*ARCHS_IN_SCOPE, *EXTRA_DEVICES)))

BACKEND_NAMES = tuple(MATRIX.backend_names())
PINNED_NAMES = tuple(n for n in BACKEND_NAMES if n != "auto")

# ---------------------------------------------------------------- keys

#: Weight keys: mostly the MXFP4 checkpoint key (else everything is a weight mismatch).
weights = st.one_of(st.just(kMxfp4Static), st.sampled_from(ALL_KEYS))

#: An activation request: no override (None), strict BF16, or any key.
activation_requests = st.one_of(st.none(), st.just(BF16), st.sampled_from(ALL_KEYS))

#: Activation keys the matrix actually has rows for (to hit eligible variants often).
matrix_activations = st.sampled_from(
    tuple(dict.fromkeys(BF16 if r.activation is None else r.activation for r in MATRIX.rows)))

# ---------------------------------------------------------------- names and devices

backend_names = st.one_of(st.just("auto"), st.sampled_from(BACKEND_NAMES))
pinned_names = st.sampled_from(PINNED_NAMES)


def spellings(name: str) -> st.SearchStrategy[str]:
    """The accepted spellings of a ``--moe-backend`` value."""
    return st.sampled_from((name, name.upper(), name.replace("_", "-"),
                            name.upper().replace("_", "-"), f" {name} "))


device_names = st.sampled_from(DEVICE_NAMES)
devices = device_names.map(Device.parse)

# ---------------------------------------------------------------- environments

def _near(minimum: Version) -> dict[str, tuple[str, ...]]:
    """Version strings around one minimum: ``below`` it (the previous release, the
    minimum's own pre-releases: ``0.7.2rc1`` < ``0.7.2``), ``equal`` to it (also spelled
    with a trailing ``.0``) and ``above`` it (the next release, a post-release).

    Both sides also hold a neighbour that compares the other way as text (``0.6.9`` <
    ``0.6.17`` < ``0.6.100``), so a gate comparing strings, not versions, is caught.
    """
    rel = minimum.release
    text = ".".join(map(str, rel))
    last = rel[-1]

    def with_last(part: int) -> str:
        return ".".join(map(str, (*rel[:-1], part)))

    below = [f"{text}rc1", f"{text}a1", f"{text}.dev0"]
    nonzero = [i for i, part in enumerate(rel) if part]
    if nonzero:  # previous release: 0.6.17 -> 0.6.16, 1.0 -> 0.999
        i = nonzero[-1]
        below.append(".".join(map(str, (*rel[:i], rel[i] - 1, *(999,) * (len(rel) - i - 1)))))
    if last >= 10:  # fewer digits, greater as text: 0.6.17 -> 0.6.9
        below.append(with_last(10 ** (len(str(last)) - 1) - 1))
    above = [with_last(last + 1), f"{text}.post1",
             with_last(10 ** len(str(last)))]  # more digits, smaller as text: 0.6.100
    return {"below": tuple(below), "equal": (text, f"{text}.0"), "above": tuple(above)}


#: Every minimum version the matrix states, and the strings near each one.
MIN_VERSIONS = tuple(sorted({v for r in MATRIX.rows for _, v in r.min_versions}))
NEAR_MINIMUM = {v: _near(v) for v in MIN_VERSIONS}
for _min, _near_it in NEAR_MINIMUM.items():  # the neighbours really are where they claim
    assert all(Version(s) < _min for s in _near_it["below"]), _near_it
    assert all(Version(s) == _min for s in _near_it["equal"]), _near_it
    assert all(Version(s) > _min for s in _near_it["above"]), _near_it
assert MIN_VERSIONS, "the matrix states no minimum version: the version gate is untested"

#: Versions near every minimum the matrix states, so the version gate is exercised.
GATE_VERSIONS = tuple(sorted({s for near in NEAR_MINIMUM.values() for ss in near.values()
                              for s in ss}, key=lambda s: (Version(s), s)))

versions = st.one_of(
    st.none(),
    st.sampled_from(GATE_VERSIONS),
    st.sampled_from(GATE_VERSIONS).map(Version),
    # int tuples: Environment converts them
    st.tuples(st.integers(0, 1), st.integers(0, 9)),
    st.tuples(st.integers(0, 1), st.integers(0, 9), st.integers(0, 20)),
)
environments = st.one_of(
    st.just(Environment.assume_all()),
    st.just(Environment.none()),
    st.dictionaries(st.sampled_from(LIBRARIES), versions).map(Environment),
)

# ---------------------------------------------------------------- layers

sizes = st.one_of(st.sampled_from((2880, 4096, 7168, 2048, 1536, 3072, 5120, 360, 720)),
                  st.integers(1, 16384))
small = st.integers(1, 256)
_LAYER_FIELD_STRATEGIES = {
    "hidden_size": st.none() | sizes,
    "intermediate_size": st.none() | sizes,
    "num_experts": st.none() | small,
    "top_k": st.none() | st.integers(1, 8),
    "activation_fn": st.none() | st.sampled_from(("swiglu_oai", "swiglu", "gelu", "relu2")),
    "swiglu_alpha": st.none() | st.floats(0.5, 2.0),
    "swiglu_limit": st.none() | st.floats(1.0, 10.0),
    "has_bias": st.none() | st.booleans(),
    "ep_size": st.none() | st.sampled_from((1, 2, 4, 8)),
    "tp_size": st.none() | st.sampled_from((1, 2, 4, 8)),
    "routing_method": st.none() | st.sampled_from(ROUTING_METHODS),
}


@st.composite
def layer_specs(draw) -> LayerSpec:
    """A valid LayerSpec, any field unknown (None); top_k never above num_experts."""
    values = {name: draw(strategy) for name, strategy in _LAYER_FIELD_STRATEGIES.items()}
    if values["top_k"] is not None and values["num_experts"] is not None:
        values["top_k"] = min(values["top_k"], values["num_experts"])
    if (values["ep_size"] or 1) > 1:  # an expert-parallel layer is not also tensor-parallel
        values["tp_size"] = None
    return LayerSpec(**values)


layers = st.one_of(st.none(), layer_specs())


@st.composite
def deployment_values(draw) -> Deployment:
    """A valid Deployment: any parallel layout, all2all backend, LoRA; EPLB only where
    vLLM's ParallelConfig allows it (EP with more than one GPU)."""
    tp = draw(st.sampled_from((1, 2, 8)))
    dp = draw(st.sampled_from((1, 2)))
    ep = draw(st.booleans())
    return Deployment(tensor_parallel_size=tp, data_parallel_size=dp, enable_expert_parallel=ep,
                      all2all_backend=draw(st.sampled_from(ALL2ALL_BACKENDS)),
                      enable_eplb=ep and tp * dp > 1 and draw(st.booleans()),
                      enable_lora=draw(st.booleans()))


#: Mostly the one-GPU default (today's requests), else any deployment.
deployments = st.one_of(st.just(Deployment()), st.just(Deployment()), st.just(Deployment()),
                        deployment_values())
#: Mostly gpt-oss (every policy has its rules), sometimes another family.
families = st.one_of(st.just("gpt-oss"), st.just("gpt-oss"), st.just("gpt-oss"),
                     st.sampled_from(MODEL_FAMILIES))


def _with_deployment(layer, deployment: Deployment):
    """A layer that agrees with ``deployment`` (its shard sizes come from it)."""
    if deployment.is_default or layer is None:
        return layer
    return layer.__class__(**{**layer.to_dict(), "tp_size": None, "ep_size": None})

# ---------------------------------------------------------------- requests


# Strategies are built once, here, not inside the composites below: building (and
# validating) a strategy on every draw is most of the cost of generating a request.
_checkpoints = st.one_of(st.none(), activation_requests)


@st.composite
def requests(draw, moe_backend=backend_names, weight=weights, activation=activation_requests,
             device=devices, environment=environments, layer=layers,
             conflicts: bool = False) -> SelectionRequest:
    """A SelectionRequest; ``conflicts=False`` keeps checkpoint and override compatible."""
    override = draw(activation)
    if conflicts or override is None:
        checkpoint = draw(_checkpoints)
    else:
        checkpoint = override if draw(st.booleans()) else None
    deployment = draw(deployments)
    return SelectionRequest(
        weight=draw(weight), activation=override, checkpoint_activation=checkpoint,
        moe_backend=draw(moe_backend), device=draw(device), environment=draw(environment),
        layer=_with_deployment(draw(layer), deployment),
        allow_activation_fallback=draw(st.booleans()), deployment=deployment,
        family=draw(families),
    )


#: Requests biased towards ones that succeed: MXFP4 weights, in-scope devices, every library.
likely_requests = requests(
    weight=st.just(kMxfp4Static),
    activation=st.one_of(st.none(), matrix_activations),
    device=st.sampled_from(ARCHS_IN_SCOPE).map(Device.parse),
    environment=st.one_of(st.just(Environment.assume_all()), environments),
    layer=st.one_of(st.none(), layers),
)

_rows = st.sampled_from(MATRIX.rows)
_extra_libraries = st.dictionaries(st.sampled_from(LIBRARIES), versions, max_size=3)
_fitting_layers = st.one_of(st.none(), st.just(LayerSpec()), layers)
#: Per row: (its archs as devices, the backend names that reach it, its activation).
_ROW_CHOICES = {
    row.name: (st.sampled_from(tuple(Device.parse(a) for a in sorted(row.archs))),
               st.sampled_from(("auto", row.family, row.name.lower())),
               st.sampled_from((None, BF16 if row.activation is None else row.activation)))
    for row in MATRIX.rows
}
_PINS = {row.name: st.sampled_from((row.family, row.name.lower())) for row in MATRIX.rows}


def _fitting(draw, row, environment: Environment | None = None,
             pinned: bool = False) -> SelectionRequest:
    device, backend, activations = _ROW_CHOICES[row.name]
    if pinned:  # the row's family or own name, never auto
        backend = _PINS[row.name]
    if environment is None:
        libs = {lib: draw(versions) for lib in row.libraries}
        extra = draw(_extra_libraries)
        everything = draw(st.booleans())
        environment = Environment.assume_all() if everything else Environment({**extra, **libs})
    activation = draw(activations)
    return SelectionRequest(
        weight=kMxfp4Static, activation=activation,
        checkpoint_activation=activation if draw(st.booleans()) else None,
        moe_backend=draw(backend),
        device=draw(device),
        environment=environment,
        layer=draw(_fitting_layers),
        allow_activation_fallback=draw(st.booleans()),
    )


@st.composite
def fitting_requests(draw) -> SelectionRequest:
    """A request built around one row: its arch, its name or family, its libraries."""
    return _fitting(draw, draw(_rows))


#: The rows with a minimum library version (the version gate's rows).
VERSIONED_ROWS = tuple(r for r in MATRIX.rows if r.min_versions)
_versioned_rows = st.sampled_from(VERSIONED_ROWS)
_gate_versions = st.sampled_from(GATE_VERSIONS)
_BELOW = {v: st.sampled_from(near["below"]) for v, near in NEAR_MINIMUM.items()}


@st.composite
def version_gated_requests(draw) -> SelectionRequest:
    """A request pinning a row with a minimum version (pinned: such rows are opt-in, so
    auto would turn them down anyway), every library it needs listed, the gated ones at
    a version near a stated minimum (below half the time, else below, equal or above)."""
    row = draw(_versioned_rows)
    minimums = dict(row.min_versions)
    libs = {lib: draw(_BELOW[minimums[lib]] if draw(st.booleans()) else _gate_versions)
            if lib in minimums else draw(versions) for lib in row.libraries}
    return _fitting(draw, row, Environment(libs), pinned=True)


#: Mixed: mostly requests that can succeed, plus anything.  Well formed: known backend
#: names and no activation conflict, so explain() never raises on them and select()
#: raises NoEligibleBackend at most.
any_requests = st.one_of(fitting_requests(), likely_requests, requests())

#: Like any_requests, but always with a LayerSpec (whose fields may still be unknown).
layered_requests = st.tuples(any_requests, layer_specs()).map(
    lambda pair: pair[0].with_(layer=_with_deployment(pair[1], pair[0].deployment)))

# ---------------------------------------------------------------- helpers shared by the properties

from oracle import explain, select  # noqa: E402
from oracle.errors import ActivationConflict, NoEligibleBackend, UnknownBackend  # noqa: E402
from oracle.matrix import load_matrix  # noqa: E402

#: An equal copy of the bundled matrix that is not ``MATRIX`` itself, so calls with it
#: bypass the selector's cache and really recompute.
FRESH_MATRIX = load_matrix()

#: What select() may raise for a well-typed request (anything else is a bug): a malformed
#: request (backend name, activation conflict) or nothing eligible.
SELECT_ERRORS = (UnknownBackend, ActivationConflict, NoEligibleBackend)
#: What explain() may raise: only for a malformed request (never "nothing eligible").
EXPLAIN_ERRORS = (UnknownBackend, ActivationConflict)


def outcome(request: SelectionRequest, matrix=None):
    """``("ok", Selection)`` or ``("error", class, rejected)`` — comparable across calls.

    Only the documented errors of select() are caught; any other exception propagates.
    """
    try:
        return ("ok", select(request, matrix=matrix))
    except SELECT_ERRORS as exc:
        return ("error", type(exc), tuple(getattr(exc, "rejected", ())))


def verdicts(request: SelectionRequest, matrix=None):
    """explain() as comparable tuples, or the error class for malformed requests."""
    try:
        return tuple((v.position, v.backend, v.verdict, v.reason, v.detail)
                     for v in explain(request, matrix=matrix))
    except EXPLAIN_ERRORS as exc:
        return type(exc)


# ---------------------------------------------------------------- counting non-trivial examples


