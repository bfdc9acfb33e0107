"""Run vLLM's OWN MXFP4 MoE backend selection on CPU, with only the hardware faked.

This module is the parent side of the conformance harness:

* :func:`ensure_vllm_sources` -- ``pip download vllm==VER`` (the ordinary way,
  pinned), keep only ``vllm/**/*.py`` in ``$MXFP4_ORACLE_CACHE/vllm-VER/``
  (default ``~/.cache/mxfp4-oracle``), delete the wheel.  Nothing of vLLM is
  copied into this repository.
* :func:`ensure_deps` -- install the pinned CPU-safe requirements from
  ``deps/vllm-VER.txt`` into ``$MXFP4_ORACLE_CACHE/deps-VER-<pytag>/`` (the
  project venv stays clean).
* :func:`vllm_answers` -- run ``_vllm_worker.py`` once per arch, in parallel
  subprocesses with a bounded timeout, and return vLLM's answer for each case.
* :func:`grid` -- the conformance grid (archs x backend names x override x
  checkpoint activation x library sets).

Only the sources and the dependency install are cached; answers are recomputed
by vLLM's code on every call.  See README.md in this folder.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_vllm_worker.py"
DEPS_DIR = HERE / "deps"

#: vLLM releases the suite runs (newest first).
VERSIONS: tuple[str, ...] = ("0.33.0", "0.22.0")

#: Seconds allowed for each external step; every subprocess is bounded.
DOWNLOAD_TIMEOUT_S = int(os.environ.get("MXFP4_ORACLE_DOWNLOAD_TIMEOUT", "600"))
INSTALL_TIMEOUT_S = int(os.environ.get("MXFP4_ORACLE_INSTALL_TIMEOUT", "600"))
WORKER_TIMEOUT_S = int(os.environ.get("MXFP4_ORACLE_WORKER_TIMEOUT", "300"))

#: An unknown ``--moe-backend`` name (vLLM must reject it).
UNKNOWN_BACKEND = "no_such_moe_backend"

#: User overrides (``--quantization-config '{"moe": {"activation": NAME}}'``).
OVERRIDES: tuple[str | None, ...] = (
    None, "mxfp8", "fp8_per_tensor_static", "fp8_per_block_dynamic", "mxfp4")

#: Checkpoint-declared MoE activation keys (names in vLLM's quant_utils).
CHECKPOINT_ACTIVATIONS: tuple[str | None, ...] = (None, "kMxfp4Dynamic", "kFp8StaticTensorSym")

#: The library vocabulary; each name drives vLLM's own availability helpers
#: (``_vllm_worker.LIBRARY_HELPERS``).
LIBRARIES: tuple[str, ...] = (
    "flashinfer", "triton_kernels", "amd-quark", "aiter", "deep_gemm", "humming")

#: Named library sets used by the grid.
LIBRARY_SETS: dict[str, frozenset[str]] = {
    "all": frozenset(LIBRARIES),
    "no-amd-quark": frozenset(LIBRARIES) - {"amd-quark"},
    "no-triton_kernels": frozenset(LIBRARIES) - {"triton_kernels"},
}

#: The tensor-parallel part of the grid.
TP_ARCHS: tuple[str, ...] = ("sm90", "sm100", "sm103", "sm120", "gfx942", "gfx950")
TP_BACKENDS: tuple[str, ...] = ("auto", "flashinfer_trtllm", "flashinfer_cutlass", "triton",
                                "marlin", "humming", "aiter", "emulation")
TP_SIZES: tuple[int, ...] = (2, 8)

#: Library sets the per-variant probe asks about: all, and each library alone
#: removed (so every library a variant's classes consult shows up).
PROBE_LIBRARY_SETS: dict[str, frozenset[str]] = {
    "all": frozenset(LIBRARIES),
    **{f"no-{lib}": frozenset(LIBRARIES) - {lib} for lib in LIBRARIES},
}

#: The faked devices.  CUDA: compute capability and a representative product
#: name; ROCm: the gfx target amdsmi reports (vLLM derives the capability from
#: it); XPU / CPU: the platform class (CPU = x86-64 with AMX).
ARCHS: dict[str, dict] = {
    "sm75": {"kind": "cuda", "cc": [7, 5], "device_name": "Tesla T4"},
    "sm80": {"kind": "cuda", "cc": [8, 0], "device_name": "NVIDIA A100-SXM4-80GB"},
    "sm86": {"kind": "cuda", "cc": [8, 6], "device_name": "NVIDIA A10"},
    "sm89": {"kind": "cuda", "cc": [8, 9], "device_name": "NVIDIA L40S"},
    "sm90": {"kind": "cuda", "cc": [9, 0], "device_name": "NVIDIA H100 80GB HBM3"},
    "sm100": {"kind": "cuda", "cc": [10, 0], "device_name": "NVIDIA B200"},
    "sm103": {"kind": "cuda", "cc": [10, 3], "device_name": "NVIDIA B300 SXM6 AC"},
    "sm107": {"kind": "cuda", "cc": [10, 7], "device_name": "NVIDIA sm_107 device"},
    "sm110": {"kind": "cuda", "cc": [11, 0], "device_name": "NVIDIA Jetson AGX Thor"},
    "sm120": {"kind": "cuda", "cc": [12, 0], "device_name": "NVIDIA GeForce RTX 5090"},
    "sm121": {"kind": "cuda", "cc": [12, 1], "device_name": "NVIDIA GB10"},
    "gfx942": {"kind": "rocm", "gfx": "gfx942", "device_name": "AMD Instinct MI300X",
               "device_id": "0x74a1"},
    "gfx950": {"kind": "rocm", "gfx": "gfx950", "device_name": "AMD Instinct MI355X",
               "device_id": "0x75a3"},
    "gfx1250": {"kind": "rocm", "gfx": "gfx1250", "device_name": "AMD gfx1250 device",
                "device_id": "0x0000"},
    "xpu": {"kind": "xpu", "device_name": "Intel(R) Data Center GPU Max 1550"},
    "cpu": {"kind": "cpu", "machine": "x86_64", "amx": True},
}

#: Compiled modules a build for that platform ships but the (CUDA) PyPI wheel
#: does not; stubbed like the wheel's own .so files (import only).
PLATFORM_EXTRA_STUBS: dict[str, tuple[str, ...]] = {
    "cuda": (),
    "rocm": ("vllm._C", "vllm._rocm_C", "vllm._moe_C"),
    "xpu": (),
    "cpu": ("vllm._C",),
}

#: The gpt-oss-20b MoE layer (its config.json: hidden_size 2880,
#: intermediate_size 2880, num_local_experts 32, num_experts_per_tok 4; vLLM's
#: gpt_oss.py builds the layer with renormalize=True, has_bias=True,
#: activation="swigluoai" and the default softmax scoring).
GPT_OSS_20B_LAYER: dict = {
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_experts": 32,
    "top_k": 4,
    "activation": "swigluoai",
    "scoring_func": "softmax",
    "renormalize": True,
    "has_bias": True,
    "dtype": "bfloat16",
    "swiglu_alpha": 1.702,
    "swiglu_limit": 7.0,
}


#: Layers the per-variant probe asks about: gpt-oss-20b's, and the same sizes
#: with plain SiLU-gated experts and no biases (which variants refuse gpt-oss for
#: its activation or its biases, and where they would run otherwise).
PROBE_LAYERS: dict[str, dict] = {
    "gpt-oss": GPT_OSS_20B_LAYER,
    "silu-no-bias": dict(GPT_OSS_20B_LAYER, activation="silu", has_bias=False,
                         swiglu_alpha=None, swiglu_limit=None),
}


class HarnessUnavailable(RuntimeError):
    """vLLM's sources or dependencies could not be fetched (e.g. no network).

    The conftest turns this into a skip locally and a failure in CI."""


class HarnessError(RuntimeError):
    """The harness itself failed (worker crash, timeout, bad output)."""


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    arch: str
    moe_backend: str = "auto"
    override: str | None = None
    checkpoint_activation: str | None = None
    libraries: str = "all"  # a LIBRARY_SETS key
    tp: int = 1  # tensor-parallel size (EP off, DP 1)

    def job_entry(self, idx: int) -> dict:
        return {
            "id": idx,
            "moe_backend": self.moe_backend,
            "override": self.override,
            "checkpoint_activation": self.checkpoint_activation,
            "libraries": sorted(LIBRARY_SETS[self.libraries]),
            "tp": self.tp,
        }


# --------------------------------------------------------------------------
# Cache locations
# --------------------------------------------------------------------------
def cache_root() -> Path:
    root = os.environ.get("MXFP4_ORACLE_CACHE") or "~/.cache/mxfp4-oracle"
    return Path(root).expanduser()


def _py_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], timeout: int, what: str, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False, **kw)
    except subprocess.TimeoutExpired as e:
        raise HarnessUnavailable(f"{what} timed out after {timeout}s: {' '.join(cmd)}") from e


# --------------------------------------------------------------------------
# vLLM sources
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sources:
    version: str
    root: Path  # contains vllm/
    manifest: dict

    @property
    def stub_modules(self) -> list[str]:
        return list(self.manifest["compiled_modules"])


def _wheel_compiled_modules(names: Iterable[str]) -> list[str]:
    mods = []
    for n in names:
        if n.startswith("vllm/") and (n.endswith(".so") or ".so." in n):
            stem = n[: n.index(".so")]
            mod = stem.replace("/", ".")
            # foo.abi3 / foo.cpython-312-x86_64-linux-gnu -> foo
            last = mod.rsplit(".", 1)
            if len(last) == 2 and (last[1].startswith("abi3") or last[1].startswith("cpython")):
                mod = last[0]
            mods.append(mod)
    return sorted(set(mods))


def _vendored_triton_kernels_api(src: Path) -> str | None:
    """The API generation vLLM's get_triton_kernels_version() would report for
    the triton_kernels copy vendored in this wheel: "3.8" without matmul_ogs,
    "3.5.1" without tensor.SparseMatrix, else "3.6" (probe order of
    vllm/utils/import_utils.py::get_triton_kernels_version)."""
    tk = src / "vllm" / "third_party" / "triton_kernels"
    if not tk.is_dir():
        return None
    if not (tk / "matmul_ogs.py").exists() and not (tk / "matmul_ogs").is_dir():
        return "3.8"
    tensor = tk / "tensor.py"
    if not tensor.exists() or "class SparseMatrix" not in tensor.read_text():
        return "3.5.1"
    return "3.6"


def _extract(wheel: Path, dest: Path, version: str) -> dict:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        py = [n for n in names if n.startswith("vllm/") and n.endswith(".py")]
        for n in py:
            z.extract(n, dest)
        meta_name = f"vllm-{version}.dist-info/METADATA"
        requires = []
        if meta_name in names:
            for line in z.read(meta_name).decode().splitlines():
                if line.startswith("Requires-Dist:"):
                    requires.append(line.split(":", 1)[1].strip())
    sha = hashlib.sha256()
    with open(wheel, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return {
        "version": version,
        "wheel": wheel.name,
        "wheel_sha256": sha.hexdigest(),
        "python_files": len(py),
        "compiled_modules": _wheel_compiled_modules(names),
        "requires_dist": requires,
        "vendored_triton_kernels_api": _vendored_triton_kernels_api(dest),
    }


def ensure_vllm_sources(version: str) -> Sources:
    """vLLM ``version``'s Python sources, downloaded once and cached."""
    root = cache_root() / f"vllm-{version}"
    manifest_path = root / "MANIFEST.json"
    if manifest_path.exists():
        return Sources(version, root, json.loads(manifest_path.read_text()))
    with _locked(cache_root() / f".vllm-{version}.lock"):
        if manifest_path.exists():
            return Sources(version, root, json.loads(manifest_path.read_text()))
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".vllm-{version}-", dir=cache_root()))
        try:
            wheel = _find_local_wheel(version)
            owned = wheel is None
            if wheel is None:
                dl = tmp / "wheel"
                cmd = [sys.executable, "-m", "pip", "download", f"vllm=={version}",
                       "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                       "--platform", "manylinux_2_28_x86_64", "--disable-pip-version-check",
                       "-d", str(dl)]
                proc = _run(cmd, DOWNLOAD_TIMEOUT_S, f"pip download vllm=={version}")
                wheels = sorted(dl.glob(f"vllm-{version}-*.whl"))
                if proc.returncode != 0 or not wheels:
                    raise HarnessUnavailable(
                        f"pip download vllm=={version} failed (rc={proc.returncode}):\n"
                        f"{proc.stderr.strip()[-2000:]}")
                wheel = wheels[0]
            t_dl = time.monotonic() - t0
            src = tmp / "src"
            manifest = _extract(wheel, src, version)
            if owned:
                wheel.unlink()  # the 336 MB wheel is not kept
            manifest["download_seconds"] = round(t_dl, 1)
            manifest["extract_seconds"] = round(time.monotonic() - t0 - t_dl, 1)
            manifest["source"] = "pip download" if owned else f"local wheel {wheel}"
            (src / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
            if root.exists():
                shutil.rmtree(root)
            os.replace(src, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Sources(version, root, json.loads(manifest_path.read_text()))


def _find_local_wheel(version: str) -> Path | None:
    """An already-downloaded wheel in $MXFP4_ORACLE_WHEELHOUSE (optional, for
    offline development); it is read, never deleted."""
    house = os.environ.get("MXFP4_ORACLE_WHEELHOUSE")
    if not house:
        return None
    found = sorted(Path(house).expanduser().glob(f"vllm-{version}-*.whl"))
    return found[0] if found else None


# --------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------
def deps_file(version: str) -> Path:
    return DEPS_DIR / f"vllm-{version}.txt"


def pinned_deps(version: str) -> list[str]:
    """The pinned requirement lines (comments stripped) for ``version``."""
    out = []
    for line in deps_file(version).read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if req:
            out.append(req)
    return out


def ensure_deps(version: str) -> Path:
    """Install the pinned dependencies for ``version`` (once; keyed by the pin
    file's content and the interpreter) and return the target directory."""
    pins = deps_file(version)
    if not pins.exists():
        raise HarnessError(f"no pinned dependency list {pins}")
    digest = hashlib.sha256(pins.read_bytes()).hexdigest()[:16]
    target = cache_root() / f"deps-{version}-{_py_tag()}"
    marker = target / ".installed"
    if marker.exists() and json.loads(marker.read_text()).get("pins") == digest:
        return target
    with _locked(cache_root() / f".deps-{version}.lock"):
        if marker.exists() and json.loads(marker.read_text()).get("pins") == digest:
            return target
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".deps-{version}-", dir=cache_root()))
        try:
            cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
                   "--disable-pip-version-check", "--no-warn-script-location",
                   "--target", str(tmp / "t"), "-r", str(pins)]
            proc = _run(cmd, INSTALL_TIMEOUT_S, f"pip install (vLLM {version} deps)")
            if proc.returncode != 0:
                raise HarnessUnavailable(
                    f"installing vLLM {version}'s pinned dependencies failed "
                    f"(rc={proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
            info = {"pins": digest, "seconds": round(time.monotonic() - t0, 1),
                    "python": sys.version.split()[0], "requirements": pinned_deps(version)}
            (tmp / "t" / ".installed").write_text(json.dumps(info, indent=1))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp / "t", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def install_info(version: str) -> dict:
    """Timings recorded when the sources and deps were fetched."""
    src = ensure_vllm_sources(version)
    deps = ensure_deps(version)
    return {"sources": src.manifest, "deps": json.loads((deps / ".installed").read_text())}


# --------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------
def moe_backend_names(version: str) -> list[str]:
    """The keys of vLLM's ``map_mxfp4_backend`` mapping (the ``--moe-backend``
    names that map to MXFP4 variants), read from the extracted source as data."""
    src = ensure_vllm_sources(version)
    path = src.root / "vllm" / "model_executor" / "layers" / "fused_moe" / "oracle" / "mxfp4.py"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "map_mxfp4_backend":
            for sub in ast.walk(node):
                value = getattr(sub, "value", None)
                target = getattr(sub, "target", None) or (getattr(sub, "targets", None) or [None])[0]
                if isinstance(sub, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Dict) \
                        and getattr(target, "id", None) == "mapping":
                    return [k.value for k in value.keys if isinstance(k, ast.Constant)]
    raise HarnessError(f"map_mxfp4_backend's mapping not found in {path}")


def grid(versions: Sequence[str] = VERSIONS, archs: Iterable[str] = ARCHS) -> list[Case]:
    """archs x (auto + every map_mxfp4_backend key of any version + an unknown
    name) x overrides x checkpoint activations x library sets.  The backend
    names are the union over ``versions`` so every version answers the same
    cases (a name a version does not know is its "not supported" error)."""
    names: list[str] = []
    for v in versions:
        for n in moe_backend_names(v):
            if n not in names:
                names.append(n)
    backends = ["auto", *names, UNKNOWN_BACKEND]
    archs = list(archs)
    cases = [Case(a, b, o, c, lib) for a, b, o, c, lib in itertools.product(
        archs, backends, OVERRIDES, CHECKPOINT_ACTIVATIONS, LIBRARY_SETS)]
    # Tensor parallelism: the per-rank intermediate size (1440 at TP 2, 360 at TP 8) on the
    # main archs and backends.
    cases += [Case(a, b, o, None, "all", tp) for a, b, o, tp in itertools.product(
        [a for a in TP_ARCHS if a in archs], TP_BACKENDS, (None, "mxfp8"), TP_SIZES)]
    return cases


# --------------------------------------------------------------------------
# Running vLLM
# --------------------------------------------------------------------------
def _clean_env(pythonpath: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    env.update({
        "PYTHONPATH": pythonpath,
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        "VLLM_CONFIGURE_LOGGING": "0",  # the worker attaches its own handler
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    })
    return env


def _job(version: str, arch: str, cases: list[dict], src: Sources, deps: Path,
         layer: dict, meta_only: bool = False, probe: bool = False) -> dict:
    spec = dict(ARCHS[arch], name=arch)
    stubs = sorted(set(src.stub_modules) | set(PLATFORM_EXTRA_STUBS[spec["kind"]]))
    humming = deps / "humming"
    return {
        "version": version,
        "arch": spec,
        "stub_modules": stubs,
        "libraries": list(LIBRARIES),
        "cases": cases,
        "layer": layer,
        "trace": True,
        "meta_only": meta_only,
        "humming_dir": str(humming) if humming.is_dir() else None,
        # humming.layer (imported at module level by vLLM 0.22's
        # fused_humming_moe) needs triton; an import-only placeholder serves.
        "humming_stub_submodules": ["humming.layer"],
        "vendored_triton_kernels_api": src.manifest.get("vendored_triton_kernels_api"),
        "probe_classes": probe,
        "probe_layers": PROBE_LAYERS,
        "probe_library_sets": [{"name": k, "libraries": sorted(v)}
                               for k, v in PROBE_LIBRARY_SETS.items()],
    }


def default_jobs() -> int:
    env = os.environ.get("MXFP4_ORACLE_CONFORMANCE_JOBS")
    if env:
        return max(1, int(env))
    return max(1, min(os.cpu_count() or 2, 4))


def _run_jobs(version: str, jobs: list[dict], src: Sources, deps: Path,
              parallel: int | None = None) -> dict[str, dict]:
    """Run the per-arch jobs of one vLLM version: one zygote process imports the
    common third-party modules and forks one child per arch (``parallel`` at a
    time); every child imports vLLM fresh under its arch's fakes.  Returns
    {arch: payload}; raises HarnessError on any crash, timeout or bad output."""
    parallel = parallel or default_jobs()
    with tempfile.TemporaryDirectory(prefix="vllm-conformance-") as tmp:
        workdir = Path(tmp)
        pairs = []
        for job in jobs:
            arch = job["arch"]["name"]
            job_path = workdir / f"job-{arch}.json"
            job_path.write_text(json.dumps(job))
            pairs.append([str(job_path), str(workdir / f"out-{arch}.json")])
        spec = workdir / "zygote.json"
        spec.write_text(json.dumps({"jobs": pairs, "parallel": parallel,
                                    "timeout": WORKER_TIMEOUT_S}))
        budget = WORKER_TIMEOUT_S * (-(-len(jobs) // parallel)) + 120
        cmd = [sys.executable, "-X", "faulthandler", str(WORKER), "--zygote", str(spec)]
        env = _clean_env(os.pathsep.join([str(src.root), str(deps)]))
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=budget,
                                  cwd=workdir, stdin=subprocess.DEVNULL, check=False,
                                  start_new_session=True)
        except subprocess.TimeoutExpired as e:
            raise HarnessError(
                f"vLLM {version} harness timed out after {budget}s ({len(jobs)} arch jobs); "
                f"stderr tail:\n{_tail(e.stderr)}") from e
        wall = round(time.monotonic() - t0, 2)
        out: dict[str, dict] = {}
        for job, (_, out_path) in zip(jobs, pairs):
            arch = job["arch"]["name"]
            path = Path(out_path)
            if not path.exists():
                raise HarnessError(
                    f"vLLM {version} worker for {arch} left no output (zygote rc="
                    f"{proc.returncode}); stderr tail:\n{_tail(proc.stderr)}")
            payload = json.loads(path.read_text())
            if not payload.get("ok"):
                raise HarnessError(
                    f"vLLM {version} worker for {arch} failed: {payload.get('error')}\n"
                    f"{payload.get('traceback', '')[-4000:]}\nstderr tail:\n{_tail(proc.stderr)}")
            payload["meta"]["version_wall_seconds"] = wall
            out[arch] = payload
        return out


def _tail(text, n: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def vllm_answers(version: str, cases: Sequence[Case], *, layer: dict | None = None,
                 jobs: int | None = None, meta: dict | None = None) -> list[dict]:
    """vLLM ``version``'s answer for each case, in order.

    Each answer: ``case`` (the Case as a dict), ``backend`` (the
    ``Mxfp4MoeBackend`` member name or None), ``experts_cls``, ``activation_key``
    (the chosen variant's activation QuantKey name), ``padded``
    (``[hidden, intermediate]`` from vLLM's padding function for the chosen
    backend), ``error`` (``{"type", "message", "phase"}`` when vLLM raised),
    ``warnings`` / ``infos`` / ``debug`` (vLLM's log records during that
    selection), ``helper_calls`` (which availability helpers vLLM consulted),
    ``kernel_config_error`` (None if vLLM's ``KernelConfig`` accepts the
    ``--moe-backend`` name, else its error -- the oracle runs either way).
    ``meta`` (optional dict) receives per-arch worker metadata and timings.
    """
    src = ensure_vllm_sources(version)
    deps = ensure_deps(version)
    layer = dict(GPT_OSS_20B_LAYER if layer is None else layer)
    by_arch: dict[str, list[tuple[int, Case]]] = {}
    for i, c in enumerate(cases):
        if c.arch not in ARCHS:
            raise ValueError(f"unknown arch {c.arch!r}; known: {sorted(ARCHS)}")
        if c.libraries not in LIBRARY_SETS:
            raise ValueError(f"unknown library set {c.libraries!r}; known: {sorted(LIBRARY_SETS)}")
        by_arch.setdefault(c.arch, []).append((i, c))
    job_list = [_job(version, arch, [c.job_entry(i) for i, c in items], src, deps, layer)
                for arch, items in by_arch.items()]
    answers: list[dict | None] = [None] * len(cases)
    for arch, payload in _run_jobs(version, job_list, src, deps, jobs).items():
        if meta is not None:
            meta[arch] = payload["meta"]
        verdicts = payload["meta"].get("kernel_config", {})
        for r in payload["results"]:
            idx = r.pop("id")
            r["case"] = dataclasses.asdict(cases[idx])
            # vLLM's KernelConfig verdict on the --moe-backend name (None =
            # accepted); the oracle's answer above is computed regardless.
            r["kernel_config_error"] = verdicts.get(cases[idx].moe_backend)
            answers[idx] = r
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        raise HarnessError(f"no answer for {len(missing)} case(s), e.g. {cases[missing[0]]}")
    return answers  # type: ignore[return-value]


@dataclasses.dataclass
class AnswerTable:
    """vLLM's answers for ``cases``, per version (``answers[v][i]`` answers
    ``cases[i]``), plus per-arch worker metadata (``meta[v][arch]``)."""

    cases: list[Case]
    answers: dict[str, list[dict]]
    meta: dict[str, dict[str, dict]]
    seconds: dict[str, float]

    def __post_init__(self) -> None:
        self._index = {c: i for i, c in enumerate(self.cases)}

    def answer(self, version: str, case: Case) -> dict:
        try:
            return self.answers[version][self._index[case]]
        except KeyError:
            raise KeyError(f"no vLLM {version} answer for {case}") from None

    def where(self, version: str, **fields) -> list[dict]:
        """Answers whose case matches every ``field=value`` given."""
        return [a for c, a in zip(self.cases, self.answers[version])
                if all(getattr(c, k) == v for k, v in fields.items())]


def answer_table(versions: Sequence[str] = VERSIONS,
                 cases: Sequence[Case] | None = None) -> AnswerTable:
    """Run vLLM (every version in ``versions``) on ``cases`` (default: the full
    :func:`grid`)."""
    cases = list(grid(versions) if cases is None else cases)
    answers, meta, seconds = {}, {}, {}
    for v in versions:
        t0 = time.monotonic()
        meta[v] = {}
        answers[v] = vllm_answers(v, cases, meta=meta[v])
        seconds[v] = round(time.monotonic() - t0, 1)
    return AnswerTable(cases, answers, meta, seconds)


def vllm_meta(version: str, arch: str) -> dict:
    """Import vLLM for one arch and report what it sees (platform class,
    capability, fp8 dtype, map_mxfp4_backend keys), without running cases."""
    src = ensure_vllm_sources(version)
    deps = ensure_deps(version)
    job = _job(version, arch, [], src, deps, dict(GPT_OSS_20B_LAYER), meta_only=True)
    return _run_jobs(version, [job], src, deps, 1)[arch]["meta"]


def class_probe(version: str, archs: Iterable[str] = ARCHS) -> dict[str, dict]:
    """Per arch: every Mxfp4MoeBackend member's experts classes asked directly
    (``is_supported_config`` per library set and activation key) and its padding
    -- vLLM's per-variant facts, which the matrix's vLLM columns must equal."""
    src = ensure_vllm_sources(version)
    deps = ensure_deps(version)
    jobs = [_job(version, a, [], src, deps, dict(GPT_OSS_20B_LAYER), meta_only=True, probe=True)
            for a in archs]
    return {a: p["meta"]["class_probe"] for a, p in _run_jobs(version, jobs, src, deps).items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python vllm_harness.py [VERSION ...] [--arch A ...] [--out FILE]``: run
    the grid and write vLLM's answers as JSON (for inspection; nothing reads it
    back -- the suite recomputes answers every session)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("versions", nargs="*", default=list(VERSIONS))
    p.add_argument("--out", default=None)
    p.add_argument("--arch", action="append", default=None)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    installs = {v: install_info(v) for v in args.versions}
    cases = grid(VERSIONS, args.arch or list(ARCHS))
    table = answer_table(args.versions, cases)
    for v in args.versions:
        print(f"vLLM {v}: {len(cases)} cases in {table.seconds[v]:.1f}s", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({
            v: {"answers": table.answers[v], "meta": table.meta[v], "install": installs[v],
                "seconds": table.seconds[v]} for v in args.versions}))
    print(f"total {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
