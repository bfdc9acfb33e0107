"""How the engine is deployed around one MoE layer: parallelism, all2all, EPLB, LoRA.

A :class:`Deployment` holds the engine flags as the user spells them (vLLM 0.33's
``--tensor-parallel-size``, ``--data-parallel-size``, ``--enable-expert-parallel``,
``--all2all-backend``, ``--enable-eplb``, ``--enable-lora``) and derives from them what
the MoE layer sees, the way vLLM's ``FusedMoEParallelConfig.make`` does
(``fused_moe/config.py:1117-1245``): without expert parallelism tensor parallelism is
flattened across data parallelism (the layer is sharded ``tp * dp`` ways); with it every
rank owns whole experts (``tp = 1``, ``ep = tp * dp``).

The experts classes of the matrix gate on named :data:`CONDITIONS` of that derived
view (``refuses = ["dp", "all2all"]``), so the data can say what a class refuses
without code.  Pure values: nothing here looks at the machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from oracle.errors import ConfigError, shown

__all__ = ["ALL2ALL_BACKENDS", "CONDITIONS", "DEEPEP_LL_HIDDEN_SIZES", "DEFAULT_ALL2ALL",
           "Deployment", "MODEL_FAMILIES", "parse_family",
           "ROUTING_METHODS", "parse_choice"]

#: vLLM 0.33's ``All2AllBackend`` literal (config/parallel.py:45-60), in its order; the
#: conformance suite reads the literal from the wheel and compares.
ALL2ALL_BACKENDS: Final = (
    "naive", "pplx", "deepep_high_throughput", "deepep_low_latency", "deepep_v2",
    "mori_high_throughput", "mori_low_latency", "moonep", "nixl_ep", "allgather_reducescatter",
    "flashinfer_all2allv", "flashinfer_nvlink_two_sided", "flashinfer_nvlink_one_sided",
    "passthrough",
)
#: ParallelConfig.all2all_backend's default (config/parallel.py:220).
DEFAULT_ALL2ALL: Final = "allgather_reducescatter"
#: Choices vLLM still accepts but replaces by the default, with a warning
#: (config/parallel.py:537-543).
REMOVED_ALL2ALL: Final = ("pplx", "naive")

#: vLLM 0.33's ``RoutingMethodType`` members (fused_moe/config.py), in enum order.
ROUTING_METHODS: Final = (
    "Default", "Renormalize", "DeepSeekV3", "Llama4", "RenormalizeNaive", "TopK",
    "SigmoidRenorm", "MiniMax2", "Sigmoid", "Unspecified", "DeepseekV4", "Custom", "Simulated",
)

#: Hidden sizes DeepEP low-latency dispatch takes; a layer's is rounded up to the next
#: (fused_moe/prepare_finalize/deepep_ll.py:57-79, applied by all2all_utils.py:172-175).
DEEPEP_LL_HIDDEN_SIZES: Final = (2048, 2560, 3072, 4096, 5120, 6144, 7168, 8192)
#: DeepEP high-throughput copies in 512-byte atoms: the hidden size is rounded up so a
#: BF16 row is a multiple of it (prepare_finalize/deepep_ht.py:51-64).
DEEPEP_HT_ATOM_BYTES: Final = 512
_BF16_BYTES: Final = 2

#: Model families, each with its own vLLM selector (matrix/vllm.toml ``family``).
MODEL_FAMILIES: Final = ("gpt-oss", "deepseek-v4")


def parse_family(value: Any, what: str = "family") -> str:
    """A model family; ``gpt_oss`` / ``deepseek_v4`` (the model_type spelling) accepted."""
    key = value.strip().lower().replace("_", "-") if isinstance(value, str) else value
    return parse_choice(what, key, MODEL_FAMILIES, "--model-family gpt-oss")


def parse_choice(what: str, value: Any, choices: tuple[str, ...], fix: str) -> str:
    """``value`` if it is one of ``choices`` (exact, as vLLM's parser takes it), else a
    ConfigError listing them."""
    if isinstance(value, str) and value in choices:
        return value
    raise ConfigError(what, "one of " + ", ".join(choices), shown(value)[:60], fix)


def _positive_int(what: str, value: Any, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 63:
        raise ConfigError(what, "a positive int", shown(value)[:40], fix)
    return value


@dataclass(frozen=True, slots=True)
class Deployment:
    """The engine flags that reach the MoE layer (defaults: one GPU, no LoRA)."""

    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    enable_expert_parallel: bool = False
    all2all_backend: str = DEFAULT_ALL2ALL
    enable_eplb: bool = False
    enable_lora: bool = False

    def __post_init__(self) -> None:
        _positive_int("tensor_parallel_size", self.tensor_parallel_size,
                      "--tensor-parallel-size 2")
        _positive_int("data_parallel_size", self.data_parallel_size, "--data-parallel-size 2")
        for name in ("enable_expert_parallel", "enable_eplb", "enable_lora"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, "True or False", shown(getattr(self, name))[:40],
                                  f"--{name.replace('_', '-')}")
        parse_choice("all2all_backend", self.all2all_backend, ALL2ALL_BACKENDS,
                     f"--all2all-backend {DEFAULT_ALL2ALL}")
        # vLLM's ParallelConfig refuses these before any layer exists
        # (config/parallel.py:563-585).
        if self.enable_eplb and not self.enable_expert_parallel:
            raise ConfigError("enable_eplb", "used with --enable-expert-parallel (vLLM's "
                              "ParallelConfig: enable_expert_parallel must be True to use "
                              "EPLB)", "EPLB without expert parallelism",
                              "add --enable-expert-parallel, or drop --enable-eplb")
        if self.enable_eplb and self.tensor_parallel_size * self.data_parallel_size <= 1:
            raise ConfigError("enable_eplb", "used with tensor or data parallelism > 1 (vLLM's "
                              "ParallelConfig: EPLB requires TP, PCP or DP)",
                              "TP=1, DP=1", "--tensor-parallel-size 2, or drop --enable-eplb")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("deployment", "fields among " + ", ".join(sorted(known)),
                              shown(unknown[0])[:40], "drop the unknown field")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ------------------------------------------------ what the MoE layer sees (vLLM's make)
    @property
    def all2all(self) -> str:
        """The all2all backend vLLM runs (a removed choice becomes the default)."""
        return DEFAULT_ALL2ALL if self.all2all_backend in REMOVED_ALL2ALL else self.all2all_backend

    @property
    def use_ep(self) -> bool:
        return self.enable_expert_parallel and self.tensor_parallel_size * \
            self.data_parallel_size > 1

    @property
    def moe_tp_size(self) -> int:
        """How many ways the layer's intermediate size is split (1 under EP)."""
        return 1 if self.use_ep else self.tensor_parallel_size * self.data_parallel_size

    @property
    def ep_size(self) -> int:
        return self.tensor_parallel_size * self.data_parallel_size if self.use_ep else 1

    @property
    def use_all2all_kernels(self) -> bool:
        return self.use_ep and self.data_parallel_size > 1

    @property
    def batched_format(self) -> bool:
        """DeepEP low-latency (and NIXL EP) dispatch hands experts the batched format."""
        return self.use_all2all_kernels and self.all2all in ("deepep_low_latency", "nixl_ep")

    def layer_hidden(self, hidden: int) -> int:
        """The hidden size the MoE layer is built with under this all2all dispatch
        (DeepEP rounds it up; others keep it); a ConfigError past DeepEP LL's largest.
        A non-positive size is returned as is (the shape gate reports it)."""
        if hidden <= 0:
            return hidden
        if self.use_all2all_kernels and self.all2all == "deepep_low_latency":
            for size in DEEPEP_LL_HIDDEN_SIZES:
                if size >= hidden:
                    return size
            raise ConfigError("hidden_size", f"at most {DEEPEP_LL_HIDDEN_SIZES[-1]} under "
                              "DeepEP low-latency all2all (its supported hidden sizes)",
                              shown(hidden), "another --all2all-backend")
        if self.use_all2all_kernels and self.all2all == "deepep_high_throughput":
            atom = DEEPEP_HT_ATOM_BYTES // _BF16_BYTES
            return -(-hidden // atom) * atom
        return hidden

    @property
    def is_default(self) -> bool:
        return self == _DEFAULT

    def holds(self, condition: str) -> bool:
        return CONDITIONS[condition][1](self)

    def describe(self) -> str:
        parts = [f"tp {self.tensor_parallel_size}"]
        if self.data_parallel_size > 1:
            parts.append(f"dp {self.data_parallel_size}")
        if self.enable_expert_parallel:
            parts.append(f"ep {self.ep_size}" if self.use_ep else "ep flag (no effect at 1 GPU)")
        if self.use_all2all_kernels:
            parts.append(f"all2all {self.all2all}" + (
                f" (vLLM replaces the removed {self.all2all_backend})"
                if self.all2all != self.all2all_backend else ""))
        if self.enable_eplb:
            parts.append("eplb")
        if self.enable_lora:
            parts.append("lora")
        return ", ".join(parts)


_DEFAULT: Final = Deployment()


def _backend_in(*names: str) -> Callable[[Deployment], bool]:
    return lambda d: d.use_all2all_kernels and d.all2all in names


#: Conditions an experts class's ``_supports_parallel_config`` refuses, by name, each
#: with the text a report shows and its definition over vLLM's FusedMoEParallelConfig
#: properties (fused_moe/config.py:1030-1104).
CONDITIONS: Final[dict[str, tuple[str, Callable[[Deployment], bool]]]] = {
    "ep": ("expert parallelism", lambda d: d.use_ep),
    "no_ep": ("no expert parallelism", lambda d: not d.use_ep),
    "dp": ("data_parallel_size > 1", lambda d: d.data_parallel_size > 1),
    "all2all": ("all2all dispatch (EP with DP > 1)", lambda d: d.use_all2all_kernels),
    "all2all_not_ag_rs": ("an all2all backend other than allgather_reducescatter",
                          lambda d: d.use_all2all_kernels and d.all2all != DEFAULT_ALL2ALL),
    "eplb": ("EPLB", lambda d: d.enable_eplb),
    "deepep_ht": ("DeepEP high-throughput all2all", _backend_in("deepep_high_throughput")),
    "fi_nvl_two_sided": ("FlashInfer NVLink two-sided all2all",
                         _backend_in("flashinfer_all2allv", "flashinfer_nvlink_two_sided")),
    "fi_nvl_one_sided": ("FlashInfer NVLink one-sided all2all",
                         _backend_in("flashinfer_nvlink_one_sided")),
    "batched": ("the batched activation format (DeepEP low-latency)",
                lambda d: d.batched_format),
}
