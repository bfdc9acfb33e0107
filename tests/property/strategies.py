"""Small Hypothesis strategies for the selector, drawn from the matrix itself.

Property tests import this module as ``strategies`` (pytest puts this folder on
``sys.path``); nothing here pins Hypothesis settings, the active profile does.
"""

from __future__ import annotations

from hypothesis import strategies as st

from oracle.keys import BF16, KEY_CONSTANTS, kMxfp4Static
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX
from oracle.request import LIBRARIES, Device, Environment, LayerSpec, SelectionRequest

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

def _near(v: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """A minimum version and its neighbours (just below, just above)."""
    below = v[:-1] + (v[-1] - 1,) if v[-1] > 0 else v[:-1]
    return (v, below, v[:-1] + (v[-1] + 1,))


#: Versions near every minimum the matrix states, so the version gate is exercised.
GATE_VERSIONS = tuple(sorted({n for r in MATRIX.rows for _, v in r.min_versions for n in _near(v)}))

versions = st.one_of(
    st.none(),
    st.sampled_from(GATE_VERSIONS),
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
layers = st.one_of(
    st.none(),
    st.builds(
        LayerSpec,
        hidden_size=st.none() | sizes,
        intermediate_size=st.none() | sizes,
        num_experts=st.none() | small,
        top_k=st.none() | st.integers(1, 8),
        activation_fn=st.none() | st.sampled_from(("swiglu_oai", "swiglu", "gelu", "relu2")),
        swiglu_alpha=st.none() | st.floats(0.5, 2.0),
        swiglu_limit=st.none() | st.floats(1.0, 10.0),
        has_bias=st.none() | st.booleans(),
        ep_size=st.none() | st.sampled_from((1, 2, 4, 8)),
        tp_size=st.none() | st.sampled_from((1, 2, 4, 8)),
    ),
)

# ---------------------------------------------------------------- requests


@st.composite
def requests(draw, moe_backend=backend_names, weight=weights, activation=activation_requests,
             device=devices, environment=environments, layer=layers,
             conflicts: bool = False) -> SelectionRequest:
    """A SelectionRequest; ``conflicts=False`` keeps checkpoint and override compatible."""
    override = draw(activation)
    if conflicts or override is None:
        checkpoint = draw(st.one_of(st.none(), activation_requests))
    else:
        checkpoint = draw(st.sampled_from((None, override)))
    return SelectionRequest(
        weight=draw(weight), activation=override, checkpoint_activation=checkpoint,
        moe_backend=draw(moe_backend), device=draw(device), environment=draw(environment),
        layer=draw(layer), allow_activation_fallback=draw(st.booleans()),
    )


#: Requests biased towards ones that succeed: MXFP4 weights, in-scope devices, every library.
likely_requests = requests(
    weight=st.just(kMxfp4Static),
    activation=st.one_of(st.none(), matrix_activations),
    device=st.sampled_from(ARCHS_IN_SCOPE).map(Device.parse),
    environment=st.one_of(st.just(Environment.assume_all()), environments),
    layer=st.one_of(st.none(), layers),
)



@st.composite
def fitting_requests(draw) -> SelectionRequest:
    """A request built around one row: its arch, its name or family, its libraries."""
    row = draw(st.sampled_from(MATRIX.rows))
    libs = {lib: draw(versions) for lib in row.libraries}
    extra = draw(st.dictionaries(st.sampled_from(LIBRARIES), versions, max_size=3))
    environment = draw(st.one_of(st.just(Environment.assume_all()),
                                 st.just(Environment({**extra, **libs}))))
    activation = draw(st.sampled_from(
        (None, BF16 if row.activation is None else row.activation)))
    return SelectionRequest(
        weight=kMxfp4Static, activation=activation,
        checkpoint_activation=draw(st.sampled_from((None, activation))),
        moe_backend=draw(st.sampled_from(("auto", row.family, row.name.lower()))),
        device=Device.parse(draw(st.sampled_from(sorted(row.archs)))),
        environment=environment,
        layer=draw(st.one_of(st.none(), st.just(LayerSpec()), layers)),
        allow_activation_fallback=draw(st.booleans()),
    )


#: Mixed: mostly requests that can succeed, plus anything (conflicts excluded).
any_requests = st.one_of(fitting_requests(), likely_requests, requests())

# ---------------------------------------------------------------- helpers shared by the properties

from oracle.errors import OracleError  # noqa: E402
from oracle.matrix import load_matrix  # noqa: E402
from oracle.selector import explain, select  # noqa: E402

#: An equal copy of the bundled matrix that is not ``MATRIX`` itself, so calls with it
#: bypass the selector's cache and really recompute.
FRESH_MATRIX = load_matrix()


def outcome(request: SelectionRequest, matrix=None):
    """``("ok", Selection)`` or ``("error", class, rejected)`` — comparable across calls."""
    try:
        return ("ok", select(request, matrix=matrix))
    except OracleError as exc:
        return ("error", type(exc), tuple(getattr(exc, "rejected", ())))


def verdicts(request: SelectionRequest, matrix=None):
    """explain() as comparable tuples, or the error class for malformed requests."""
    try:
        return tuple((v.position, v.backend, v.verdict, v.reason, v.detail)
                     for v in explain(request, matrix=matrix))
    except OracleError as exc:
        return type(exc)
