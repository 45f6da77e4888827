"""Which components of a model are in memory: loaded on first use, evicted least-recently-used, offloaded.

A `ComponentManager` owns a `CoDiModel` whose parameters start on the meta device (no memory, no random
initialisation) and a `WeightSource`. `acquire(names)` materialises what a stage needs, straight from the
source in the target dtype; with `max_memory` it first evicts the least recently used components the stage
does not need; with `offload="model"` components wait on the CPU and each moves to the device only for the
stage that runs it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from torch import Tensor, nn

from codi.components import group_keys
from codi.weights import WeightSource

log = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "model")


def build_empty(build, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Calls `build()` with parameters on the meta device (no memory, no random init); buffers are built
    normally and then moved to `device`, floating ones cast to `dtype` (what `module.to` would do)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        module = build()
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and not buf.is_meta:
                sub._buffers[name] = buf.to(device=device, dtype=dtype if buf.is_floating_point() else buf.dtype)
    return module


def assign(model: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    """Puts each tensor in place of the parameter or buffer of that state-dict key (no copy). Keys given
    the same tensor object get one shared parameter (tied weights stay tied)."""
    params: dict[int, nn.Parameter] = {}
    for key, t in tensors.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        if leaf in owner._parameters:
            if id(t) not in params:
                params[id(t)] = nn.Parameter(t, requires_grad=False)
            owner._parameters[leaf] = params[id(t)]
        elif leaf in owner._buffers:
            owner._buffers[leaf] = t
        else:
            raise KeyError(f"{key!r} is neither a parameter nor a buffer of the model")


def channels_last_convs(model: nn.Module) -> None:
    """Stores every loaded Conv2d kernel channels-last: oneDNN's CPU convolutions then skip converting the kernel's
    layout on every call (the released image UNet's step on 2 cores: 3.3 -> 2.3 s in float32), and cuDNN's
    half-precision kernels prefer it too. Same numbers up to float rounding; kernels on meta are left alone."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not module.weight.is_meta:
            weight = module.weight
            if not weight.is_contiguous(memory_format=torch.channels_last):
                weight.data = weight.data.contiguous(memory_format=torch.channels_last)


def tensor_bytes(tensors: list[Tensor], dtype: torch.dtype) -> int:
    """Bytes of `tensors` once loaded in `dtype` (floating ones); a tied tensor counts once."""
    unique = {id(t): t for t in tensors}.values()
    float_size = torch.empty((), dtype=dtype).element_size()
    return sum(t.numel() * (float_size if t.is_floating_point() else t.element_size()) for t in unique)


class ComponentManager:
    """Loads a model's components on demand and keeps the resident ones within a memory budget."""

    def __init__(
        self,
        model: nn.Module,
        source: WeightSource | None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_memory: float | None = None,
        offload: str = "none",
    ) -> None:
        """Args:
        model: parameters on meta (to load from `source`), or fully loaded when `source` is None.
        max_memory: bytes the resident components may take (None: no limit).
        offload: 'none' or 'model' (components on the CPU, each on `device` only while its stage runs).
        """
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
        self.model, self.source = model, source
        self.device, self.dtype = torch.device(device), dtype
        self.max_memory, self.offload = max_memory, offload
        state = model.state_dict(keep_vars=True)  # meta tensors where not loaded
        self.keys = group_keys(state)
        self.sizes = {name: tensor_bytes([state[k] for k in keys], dtype) for name, keys in self.keys.items()}
        self.resident: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self.loaded_log: list[str] = []  # components loaded since the last `take_loaded()`
        self.load_seconds = 0.0
        self.on_load: Callable[[str, int], None] | None = None  # told (component, bytes) before each one is read
        if source is None:
            for name in self.keys:
                self.resident[name] = None
            channels_last_convs(model)

    @property
    def storage_device(self) -> torch.device:
        return torch.device("cpu") if self.offload == "model" else self.device

    def resident_bytes(self, names: Iterable[str] | None = None) -> int:
        return sum(self.sizes[n] for n in (self.resident if names is None else names))

    def is_resident(self, name: str) -> bool:
        return name in self.resident

    @contextmanager
    def acquire(self, names: Iterable[str]) -> Iterator[None]:
        """Materialises `names` (evicting others to stay within `max_memory`) on the device for a stage."""
        names = [n for n in dict.fromkeys(names) if n in self.keys]
        self._make_room(names)
        for name in names:
            if name not in self.resident:
                self._load(name)
            self.resident.move_to_end(name)
        if self.offload == "model":
            for name in names:
                self._move(name, self.device)
        try:
            yield
        finally:
            if self.offload == "model":
                for name in names:
                    self._move(name, self.storage_device)

    @contextmanager
    def reporting_loads(self, on_load: Callable[[str, int], None]) -> Iterator[None]:
        """Within the block, `on_load(component, bytes)` is called before each component is read; the hook that was
        set before (a caller's, or None) is back afterwards."""
        previous, self.on_load = self.on_load, on_load
        try:
            yield
        finally:
            self.on_load = previous

    def load_all(self, names: Iterable[str] | None = None) -> None:
        """Materialises every component (or `names`), e.g. to save the whole model."""
        for name in names or list(self.keys):
            if name not in self.resident:
                self._make_room([name])
                self._load(name)

    def evict(self, name: str) -> None:
        """Frees a component's parameters (they go back to the meta device); a later use loads it again."""
        if self.source is None or name not in self.resident:
            return
        meta = {k: torch.empty_like(t, device="meta") for k, t in self.tensors(name).items()}
        assign(self.model, meta)
        del self.resident[name]
        log.info("evicted %s (%.2f GB)", name, self.sizes[name] / 1e9)

    def take_loaded(self) -> list[str]:
        """The components loaded since the last call (for result.json)."""
        loaded, self.loaded_log = self.loaded_log, []
        return loaded

    def tensors(self, name: str) -> dict[str, Tensor]:
        """A component's parameters and persistent buffers by state-dict key (meta tensors when not loaded)."""
        state = self.model.state_dict(keep_vars=True)
        return {k: state[k] for k in self.keys[name]}

    def _make_room(self, needed: list[str]) -> None:
        if self.max_memory is None or self.source is None:
            return
        missing = self.resident_bytes(n for n in needed if n not in self.resident)
        for name in list(self.resident):  # least recently used first
            if self.resident_bytes() + missing <= self.max_memory:
                break
            if name not in needed:
                self.evict(name)
        total = self.resident_bytes(needed)
        if total > self.max_memory:
            log.warning(
                "max_memory %.2f GB is below what this stage needs at once (%s: %.2f GB); loading anyway",
                self.max_memory / 1e9,
                ", ".join(needed),
                total / 1e9,
            )

    def _load(self, name: str) -> None:
        if self.source is None:
            raise RuntimeError(f"component {name} was evicted and this model has no weight source to reload it")
        if self.on_load is not None:
            self.on_load(name, self.sizes[name])
        start = time.perf_counter()
        tensors = self.source.read(self.keys[name], self.storage_device, self.dtype)
        assign(self.model, tensors)  # sources cast kernels straight into channels-last (codi.weights.cast)
        self.resident[name] = None
        self.loaded_log.append(name)
        seconds = time.perf_counter() - start
        self.load_seconds += seconds
        log.info("loaded %s (%.2f GB) in %.1f s", name, self.sizes[name] / 1e9, seconds)

    def _move(self, name: str, device: torch.device) -> None:
        moved: dict[int, Tensor] = {}
        tensors = {}
        for key, t in self.tensors(name).items():
            if id(t) not in moved:
                moved[id(t)] = t.data.to(device)
            tensors[key] = moved[id(t)]
        assign(self.model, tensors)


def reset_peak_memory(device: torch.device) -> None:
    """Starts a new peak-memory window: CUDA's max-allocated counter, or the process's peak RSS on Linux."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM, the peak resident set


def peak_memory(device: torch.device) -> dict[str, object]:
    """{'bytes': peak, 'kind': what was measured} since `reset_peak_memory` (or since the process started)."""
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_allocated"}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"bytes": int(line.split()[1]) * 1024, "kind": "process_peak_rss"}
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "kind": "process_peak_rss_lifetime"}
