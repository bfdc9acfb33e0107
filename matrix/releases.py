"""Load and validate ``vllm.toml``: what each vLLM release's MXFP4 MoE selection does.

The vLLM policies (``vllm-0.33``, ``vllm-0.22``) read one :class:`Release` each: the
release's ``--moe-backend`` names, its auto list and per-arch moves, its activation
rule, and per variant the facts its experts classes gate on (:class:`Variant`).
The strict policy never reads this file; the rows of ``mxfp4_moe.toml`` stay the one
source of kernel facts, and a variant here must name one of them.

Same conventions as :mod:`oracle.matrix.loader` (its checks are reused): the schema is
declared beside the fields, a malformed table fails at import with a
:class:`~oracle.errors.MatrixError` naming ``release.VERSION.variant.NAME`` and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from oracle.deployment import CONDITIONS, MODEL_FAMILIES, ROUTING_METHODS
from oracle.errors import MatrixError
from oracle.keys import QuantKey
from oracle.matrix.loader import (Adjustment, read_toml, _adjustments, _archs, _build, _fail, _flag,
                                  _list_of, _matching, _names, _nonempty, _one_of, _quant_key, _row_name, _text,
                                  _snake, _spec, _typed)
from oracle.platforms import LIBRARIES, PLATFORMS

__all__ = ["Checkpoint", "ExpertsClass", "Family", "Release", "Variant", "load_releases", "parse_releases",
           "POLICY_RELEASES"]

_TABLE: Final = "vllm.toml"

#: policy name -> the release whose rules it applies.
POLICY_RELEASES: Final = {"vllm-0.33": "0.33.0", "vllm-0.22": "0.22.0"}

_PAD_KEYS: Final = ("default", *PLATFORMS)


def _alignment(row: str, key: str, value: Any) -> tuple[int, int]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        _fail(row, key, "[hidden, intermediate] positive alignments", value, "[256, 128]")
    return int(value[0]), int(value[1])


def _pad(row: str, key: str, value: Any) -> tuple[tuple[str, tuple[int, int]], ...]:
    if not isinstance(value, Mapping) or "default" not in value:
        _fail(row, key, 'a table {default = [h, i], PLATFORM = [h, i]}', value)
    return tuple((_one_of(_PAD_KEYS)(row, f"{key}.{k}", k), _alignment(row, f"{key}.{k}", v))
                 for k, v in value.items())


def _int_table(row: str, key: str, value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping):
        _fail(row, key, "a table {quant_method = capability}", value)
    return tuple((_method(row, key, k), _typed(int, "a capability x10 like 80",
                                              lambda v: v > 0)(row, f"{key}.{k}", v))
                 for k, v in value.items())


_method = _matching(r"[a-z][a-z0-9_-]*", "a quantization method name like compressed-tensors")


def _retry(row: str, key: str, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        _fail(row, key, 'a table {platform = "VARIANT"}', value)
    return tuple((_one_of(PLATFORMS)(row, key, k), _row_name(row, f"{key}.{k}", v))
                 for k, v in value.items())


def _release_key(row: str, key: str, value: Any) -> QuantKey | None:
    return _quant_key(allow_none=True)(row, key, value)


@dataclass(frozen=True, slots=True)
class Variant:
    """What one release's experts classes for a variant accept (see vllm.toml's header)."""

    archs: frozenset[str] = _spec(_archs)
    activation_fns: tuple[str, ...] = _spec(
        _list_of(_one_of(("swiglu_oai", "swiglu")), "a list of swiglu_oai / swiglu"))
    pad: tuple[tuple[str, tuple[int, int]], ...] = _spec(_pad)
    experts: tuple[str, ...] = _spec(_list_of(_nonempty, "a list of experts class names"))
    source: str = _spec(_nonempty)
    libraries: tuple[str, ...] = _spec(
        _list_of(_one_of(LIBRARIES), "a list of library names", non_empty=False), ())
    bias: bool = _spec(_flag, True)
    drops_bias: bool = _spec(_flag, False)
    activation_format: str = _spec(_one_of(("standard", "batched")), "standard")
    ep_required: bool = _spec(_flag, False)
    requested_activation: bool = _spec(_flag, False)
    honours_override: bool = _spec(_flag, False)
    #: gates the classes ask before the device (B12X: biases; EMULATION: amd-quark)
    first: tuple[str, ...] = _spec(
        _list_of(_one_of(("bias", "libraries")), "a list of bias / libraries", non_empty=False), ())
    #: where the device gate passes when that is wider than ``archs``: there the
    #: classes refuse the variant's weight x activation pair ("quantization scheme")
    device_archs: frozenset[str] = _spec(_archs, frozenset())
    #: vLLM's _backend_activation_key when it differs from the row's activation
    #: ("None" = BF16): the key the release filters and asks the classes with.
    activation: QuantKey | None | str = _spec(_release_key, "row")
    #: classes tried first when this variant is pinned and LoRA is on (_requested_kernel_cls)
    pinned_lora_classes: tuple[str, ...] = _spec(
        _list_of(_nonempty, "a list of experts class names", non_empty=False), ())
    #: pinned with LoRA on, the release raises this (vLLM's reason) instead of trying classes
    pinned_lora_refused: str = _spec(_text, "")

    def key(self, row: Any) -> QuantKey | None:
        """The activation key vLLM files this variant under (its own, else the row's)."""
        return row.activation if self.activation == "row" else self.activation  # type: ignore

    def alignment(self, platform: str) -> tuple[int, int]:
        """(hidden, intermediate) vLLM rounds the layer up to on ``platform``."""
        table = dict(self.pad)
        return table.get(platform, table["default"])


def _variants(row: str, key: str, value: Any) -> dict[str, Variant]:
    if not isinstance(value, Mapping) or not value:
        _fail(row, key, "a non-empty table of [variant.NAME] tables", value)
    return {_row_name(row, key, name): _build(Variant, data, f"{row}.variant.{name}", "variant")
            for name, data in value.items()}


_variant_list = _list_of(_row_name, "a list of variant names", non_empty=False)

_class_name = _matching(r"[A-Za-z_][A-Za-z0-9_]*", "an experts class name")
_HUMMING_GEMMS: Final = ("indexed", "grouped_contiguous", "grouped_masked")


def _preferred_gemm(row: str, key: str, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping) or set(value) != {"ep", "default"}:
        _fail(row, key, 'a table {ep = "GEMM", default = "GEMM"}', value)
    return tuple((k, _one_of(_HUMMING_GEMMS)(row, f"{key}.{k}", v)) for k, v in value.items())


@dataclass(frozen=True, slots=True)
class ExpertsClass:
    """What one experts class's ``is_supported_config`` asks beyond the variant's facts:
    the parallel config, routing, activation format and LoRA (modular_kernel.py:580-633)."""

    monolithic: bool = _spec(_flag)
    source: str = _spec(_nonempty)
    format: str = _spec(_one_of(("standard", "batched")), "standard")
    lora: bool = _spec(_flag, False)
    #: deployment conditions (oracle.deployment.CONDITIONS) its parallel-config gate refuses
    refuses: tuple[str, ...] = _spec(
        _list_of(_one_of(tuple(CONDITIONS)), "a list of deployment conditions",
                 non_empty=False), ())
    #: RoutingMethodType names it accepts (empty: any)
    routing: tuple[str, ...] = _spec(
        _list_of(_one_of(ROUTING_METHODS), "a list of RoutingMethodType names",
                 non_empty=False), ())
    #: a Humming class's GEMM type; built only where it is the release's preferred one
    humming_gemm: str = _spec(_one_of(("", *_HUMMING_GEMMS)), "")


def _classes(row: str, key: str, value: Any) -> dict[str, ExpertsClass]:
    if not isinstance(value, Mapping):
        _fail(row, key, "a table of [experts_class.NAME] tables", value)
    return {_class_name(row, key, name): _build(ExpertsClass, data, f"{row}.{key}.{name}",
                                                 "experts_class")
            for name, data in value.items()}


def _platform_lists(row: str, key: str, value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, Mapping) or not value:
        _fail(row, key, 'a table {platform = ["VARIANT", ...]}', value)
    return tuple((_one_of(PLATFORMS)(row, key, k),
                  _list_of(_row_name, "a non-empty list of variant names")(row, f"{key}.{k}", v))
                 for k, v in value.items())


def _routing_lists(row: str, key: str, value: Any) -> tuple[tuple[str, tuple], ...]:
    if not isinstance(value, Mapping):
        _fail(row, key, "a table {RoutingMethod = {platform = [...]}}", value)
    return tuple((_one_of(ROUTING_METHODS)(row, key, k), _platform_lists(row, f"{key}.{k}", v))
                 for k, v in value.items())


@dataclass(frozen=True)
class Family:
    """One model family's selector in a release: its auto lists and what it reads.

    gpt-oss's quant method calls ``select_mxfp4_moe_backend`` (the release's ``auto``,
    activation filter and override); DeepSeek-V4's ``select_deepseek_v4_mxfp4_moe_backend``
    has its own per-platform list and never reads the activation override."""

    selector: str = _spec(_nonempty)
    quant_method: str = _spec(_class_name)
    supports_eplb: bool = _spec(_flag)
    routing: str = _spec(_one_of(ROUTING_METHODS))
    source: str = _spec(_nonempty)
    #: the release's auto list and activation rules (gpt-oss) or its own (below)
    uses_release_auto: bool = _spec(_flag, False)
    #: platform -> auto list (when not the release's)
    auto: tuple[tuple[str, tuple[str, ...]], ...] = _spec(_platform_lists, ())
    #: routing method -> platform -> auto list, replacing ``auto`` there
    auto_by_routing: tuple[tuple[str, tuple], ...] = _spec(_routing_lists, ())
    adjustment: tuple[Adjustment, ...] = _spec(_adjustments, ())
    reads_override: bool = _spec(_flag, True)

    def auto_order(self, platform: str, arch: str, routing: str) -> tuple[str, ...]:
        """The family's own auto list on ``arch`` (not for ``uses_release_auto``)."""
        by_routing = dict(self.auto_by_routing).get(routing)
        table = dict(by_routing) if by_routing and platform in dict(by_routing) \
            else dict(self.auto)
        order = list(table.get(platform, ()))
        for adj in self.adjustment:
            if arch in adj.archs and adj.move in order:
                order.remove(adj.move)
                anchor_name = adj.before if adj.before is not None else adj.after
                if anchor_name not in order:
                    order.append(adj.move)
                    continue
                anchor = order.index(anchor_name)
                order.insert(anchor if adj.before is not None else anchor + 1, adj.move)
        return tuple(order)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What one checkpoint family's quant method hands the MoE oracle (vllm.toml)."""

    quant_method: str = _spec(_method)
    moe_method: str = _spec(_class_name)
    selector: str = _spec(_one_of((*MODEL_FAMILIES, "own")))
    activation: QuantKey | None = _spec(_release_key)
    supports_eplb: bool = _spec(_flag)
    source: str = _spec(_nonempty)
    own_order: tuple[str, ...] = _spec(
        _list_of(_row_name, "a list of variant names", non_empty=False), ())
    oracle_names: tuple[str, ...] = _spec(
        _list_of(_snake, "a list of --moe-backend names", non_empty=False), ())
    #: variants with which the method supports EPLB although ``supports_eplb`` is false
    eplb_variants: tuple[str, ...] = _spec(
        _list_of(_row_name, "a list of variant names", non_empty=False), ())


def _checkpoints(row: str, key: str, value: Any) -> dict[str, Checkpoint]:
    if not isinstance(value, Mapping):
        _fail(row, key, "a table of [checkpoint.NAME] tables", value)
    return {_checkpoint_name(row, key, name): _build(Checkpoint, data,
                                                     f"{row}.checkpoint.{name}", "checkpoint")
            for name, data in value.items()}


_checkpoint_name = _matching(r"[a-z][a-z0-9-]*", "a lower-case checkpoint family name")


def _families(row: str, key: str, value: Any) -> dict[str, Family]:
    if not isinstance(value, Mapping):
        _fail(row, key, "a table of [family.NAME] tables", value)
    return {_one_of(MODEL_FAMILIES)(row, key, name): _build(Family, data, f"{row}.family.{name}",
                                                            "family")
            for name, data in value.items()}


def _substitutes(row: str, key: str, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        _fail(row, key, 'a table {VARIANT = "VARIANT"}', value)
    return tuple((_row_name(row, key, k), _row_name(row, f"{key}.{k}", v))
                 for k, v in value.items())


@dataclass(frozen=True)
class Release:
    """One vLLM release's MXFP4 MoE selection rules and per-variant facts."""

    source: str = _spec(_nonempty)
    auto: tuple[str, ...] = _spec(_list_of(_row_name, "a non-empty list of variant names"))
    activation_fallback: bool = _spec(_flag)
    kernel_config: tuple[str, ...] = _spec(_list_of(_snake, "a list of --moe-backend names"))
    names: Mapping[str, tuple[str, ...]] = _spec(_names)
    variant: Mapping[str, Variant] = _spec(_variants)
    unfiltered_names: tuple[str, ...] = _spec(
        _list_of(_snake, "a list of --moe-backend names", non_empty=False), ())
    platform_retry: tuple[tuple[str, str], ...] = _spec(_retry, ())
    min_capability: tuple[tuple[str, int], ...] = _spec(_int_table, ())
    adjustment: tuple[Adjustment, ...] = _spec(_adjustments, ())
    #: the experts classes' own gates (releases without it model no deployment axes)
    experts_class: Mapping[str, ExpertsClass] = _spec(_classes, None)
    #: model family -> its selector
    family: Mapping[str, Family] = _spec(_families, None)
    #: checkpoint family -> what its quant method hands the oracle
    checkpoint: Mapping[str, Checkpoint] = _spec(_checkpoints, None)
    #: the Humming GEMM type the release prefers, with and without expert parallelism
    humming_preferred_gemm: tuple[tuple[str, str], ...] = _spec(_preferred_gemm, ())
    #: pinned variants replaced under the batched activation format (MARLIN -> BATCHED_MARLIN)
    batched_substitute: tuple[tuple[str, str], ...] = _spec(_substitutes, ())
    version: str = field(default="", compare=False)
    _orders: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        orders = {}
        for arch in {a for adj in self.adjustment for a in adj.archs}:
            order = list(self.auto)
            for adj in self.adjustment:
                if arch in adj.archs:
                    order.remove(adj.move)
                    anchor = order.index(adj.before if adj.before is not None else adj.after)
                    order.insert(anchor if adj.before is not None else anchor + 1, adj.move)
            orders[arch] = tuple(order)
        object.__setattr__(self, "_orders", orders)

    def auto_order(self, arch: str) -> tuple[str, ...]:
        """The auto list as vLLM orders it on ``arch``."""
        return self._orders.get(arch, self.auto)

    @property
    def models_deployment(self) -> bool:
        """Whether the release's experts-class gates (and families) are recorded."""
        return self.experts_class is not None

    def valid_names(self) -> list[str]:
        """``--moe-backend`` values this release accepts for an MXFP4 MoE layer."""
        return ["auto", *(n for n in self.names if n in self.kernel_config)]


def _check_release(label: str, r: Release, rows: Mapping[str, Any] | None) -> None:
    """Cross-field facts: every name is a variant, every variant a matrix row."""
    listed = [*r.auto, *(m for ms in r.names.values() for m in ms),
              *(v for _, v in r.platform_retry)]
    for name in listed:
        if name not in r.variant:
            _fail(label, "variant", "a [variant.NAME] table for every variant it names", name)
    for i, adj in enumerate(r.adjustment):
        for side in (adj.move, adj.before, adj.after):
            if side is not None and side not in r.auto:
                _fail(f"{label}.adjustment#{i}", "move", "variants of the auto list", side)
        if (adj.before is None) == (adj.after is None):
            _fail(f"{label}.adjustment#{i}", "before/after", "exactly one of before, after",
                  (adj.before, adj.after))
    for name in r.unfiltered_names:
        if name not in r.names:
            _fail(label, "unfiltered_names", "names listed under [names]", name)
    if r.experts_class is not None:
        for name, v in r.variant.items():
            for cls in (*v.experts, *v.pinned_lora_classes):
                if cls not in r.experts_class:
                    _fail(f"{label}.variant.{name}", "experts",
                          "classes with an [experts_class.NAME] table", cls)
    for fam_name, fam in (r.family or {}).items():
        lists = [*(v for _, v in fam.auto),
                 *(v for _, t in fam.auto_by_routing for _, v in t)]
        for names in lists:
            for name in names:
                if name not in r.variant:
                    _fail(f"{label}.family.{fam_name}", "auto", "variants of this release",
                          name)
    methods = dict(r.min_capability)
    for ck_name, ck in (r.checkpoint or {}).items():
        where = f"{label}.checkpoint.{ck_name}"
        if ck.quant_method not in methods:
            _fail(where, "quant_method", "a method with a min_capability entry", ck.quant_method)
        if ck.selector != "own" and ck.selector not in (r.family or {}):
            _fail(where, "selector", "a family of this release, or own", ck.selector)
        if (ck.selector == "own") != bool(ck.own_order):
            _fail(where, "own_order", "given exactly when selector is own", ck.own_order)
        for key, names in (("own_order", ck.own_order), ("eplb_variants", ck.eplb_variants)):
            for name in names:
                if name not in r.variant:
                    _fail(where, key, "variants of this release", name)
        for name in ck.oracle_names:
            if name not in r.names:
                _fail(where, "oracle_names", "names listed under [names]", name)
    for old, new in r.batched_substitute:
        for name in (old, new):
            if name not in r.variant:
                _fail(label, "batched_substitute", "variants of this release", name)
    if rows is not None:
        for name in r.variant:
            if name not in rows:
                _fail(f"{label}.variant.{name}", "name", "a row of mxfp4_moe.toml", name)


def parse_releases(doc: Mapping[str, Any],
                   rows: Mapping[str, Any] | None = None) -> dict[str, Release]:
    """Validate a parsed ``vllm.toml`` (variants checked against ``rows`` when given)."""
    if not isinstance(doc, Mapping) or doc.get("schema") != 1:
        _fail("<vllm.toml>", "schema", "the integer 1", doc.get("schema") if isinstance(
            doc, Mapping) else doc)
    extra = set(doc) - {"schema", "release"}
    if extra:
        _fail("<vllm.toml>", sorted(extra)[0], "a known field", sorted(extra)[0],
              "schema, release")
    table = doc.get("release")
    if not isinstance(table, Mapping) or not table:
        _fail("<vllm.toml>", "release", 'a table of [release."X.Y.Z"] tables', table)
    out = {}
    for version, data in table.items():
        label = f"release.{version}"
        _typed(str, "a release version like 0.33.0",
               lambda v: v.count(".") == 2 and v.replace(".", "").isascii()
               and v.replace(".", "").isdigit())(label, "version", version)
        release: Release = _build(Release, data, label, "release")
        object.__setattr__(release, "version", version)
        _check_release(label, release, rows)
        out[version] = release
    for policy, version in POLICY_RELEASES.items():
        if version not in out:
            raise MatrixError("<vllm.toml>", "release", f"rules for {version} ({policy})",
                              "missing")
    return out


def load_releases(text: str | None = None,
                  rows: Mapping[str, Any] | None = None) -> dict[str, Release]:
    """The bundled ``vllm.toml`` (or ``text``), validated."""
    doc = read_toml(text, _TABLE, "<vllm.toml>")
    return parse_releases(doc, rows)

