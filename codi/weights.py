"""Where a model's weights come from, read key by key on demand.

`SafetensorsSource` reads our own format (one or more .safetensors files in our key names, memory-mapped).
`OfficialSource` reads the released .pth files through the official key table (`codi.keymaps`): it indexes
every file once (shapes only), checks that every key of our model is provided with the right shape, and
then converts just the tensors a component asks for. Official keys of no component are skipped and
reported (`KeyReport`), or refused with `strict_keys=True`; two official keys that land on one of ours are
resolved as the official loader does (the later file order wins) and reported when they differ.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from codi.loading import (
    CheckpointKeyError,
    ComponentMap,
    KeyReport,
    _component_for,
    _listing,
    corrupt,
    is_legacy_pickle,
    read_tensor_file,
)

log = logging.getLogger(__name__)


class WeightSource(ABC):
    """Tensors in our key names, read on demand onto a device in a dtype."""

    description: str = ""
    report: KeyReport

    @abstractmethod
    def keys(self) -> set[str]:
        """Every key of ours this source provides."""

    @abstractmethod
    def read(self, keys: Iterable[str], device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """The tensors of `keys`, floating ones cast to `dtype`, on `device`. Keys a source stores once for
        several names (tied weights) come back as one tensor object under each name."""


def cast(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Floating tensors to `dtype`, every tensor to `device` (no copy when nothing changes); 4-D tensors (the
    convolution kernels) come out channels-last, the layout `channels_last_convs` wants, in the same copy."""
    fmt = torch.channels_last if t.ndim == 4 else torch.preserve_format
    return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype, memory_format=fmt)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


READ_BATCH_BYTES = 256 * 2**20


def _safetensors_header(path: Path) -> bytes:
    """The JSON header of a .safetensors file (an 8-byte little-endian length, then the JSON)."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return f.read(n)


class SafetensorsSource(WeightSource):
    """Our own format: .safetensors files in our key names (a file's `tied` metadata names omitted twins)."""

    def __init__(self, files: Sequence[str | Path]) -> None:
        from safetensors import safe_open

        self.files = [Path(f) for f in files]
        self.description = ", ".join(str(f) for f in self.files)
        self.report = KeyReport()
        self.where: dict[str, tuple[int, str]] = {}  # our key -> (file index, stored key)
        self._sizes: dict[int, dict[str, int]] = {}  # file index -> stored key -> bytes
        for i, path in enumerate(self.files):
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    self.where[key] = (i, key)
                tied = json.loads((f.metadata() or {}).get("tied", "{}"))
            for twin, stored in tied.items():
                self.where[twin] = (i, stored)

    def keys(self) -> set[str]:
        return set(self.where)

    def shapes(self) -> dict[str, Tensor]:
        """Our key -> a meta tensor of the stored shape and dtype (nothing is read)."""
        from safetensors import safe_open

        out: dict[str, Tensor] = {}
        for i, path in enumerate(self.files):
            with safe_open(str(path), framework="pt") as f:
                stored = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118
                for key, (j, name) in self.where.items():
                    if j == i:
                        s = stored[name]
                        dtype = _SAFETENSORS_DTYPES.get(s.get_dtype(), torch.float32)
                        out[key] = torch.empty(s.get_shape(), dtype=dtype, device="meta")
        return out

    def read(self, keys: Iterable[str], device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        by_file: dict[int, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.where[key][0], []).append(key)
        out: dict[str, Tensor] = {}
        for i, names in sorted(by_file.items()):
            loaded: dict[str, Tensor] = {}  # stored key -> tensor (tied twins share one)
            for batch in self._batches(i, names):
                self._read_batch(self.files[i], batch, loaded, device, dtype)
            for key in names:
                out[key] = loaded[self.where[key][1]]
        return out

    def _batches(self, i: int, names: list[str], limit: int = READ_BATCH_BYTES) -> Iterator[list[str]]:
        """`names` in runs of about `limit` stored bytes: the file is mapped once per run and unmapped after it,
        so a part is never resident twice (mapped and converted) in the peak memory."""
        sizes = self._stored_bytes(i)
        batch, total = [], 0
        for key in names:
            batch.append(key)
            total += sizes[self.where[key][1]]
            if total >= limit:
                yield batch
                batch, total = [], 0
        if batch:
            yield batch

    def _read_batch(
        self, path: Path, names: list[str], loaded: dict[str, Tensor], device: torch.device, dtype: torch.dtype
    ) -> None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for key in names:
                stored = self.where[key][1]
                if stored not in loaded:
                    raw = f.get_tensor(stored)
                    t = cast(raw, device, dtype)
                    loaded[stored] = t.clone() if t.data_ptr() == raw.data_ptr() else t  # own memory, not the map

    def _stored_bytes(self, i: int) -> dict[str, int]:
        if i not in self._sizes:
            header = json.loads(_safetensors_header(self.files[i]))
            self._sizes[i] = {
                k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"
            }
        return self._sizes[i]


class OfficialSource(WeightSource):
    """The released .pth files, applied in order through the official key table."""

    def __init__(
        self,
        files: Sequence[str | Path],
        table: Sequence[ComponentMap],
        expected: Mapping[str, Tensor],
        strict_keys: bool = False,
    ) -> None:
        """Indexes `files` (shapes only) against `expected` (our key -> tensor or meta tensor of the model).

        Raises:
            CheckpointKeyError naming every key of ours no file provides, every shape mismatch, and (with
            `strict_keys`) every official key of no component.
        """
        self.files = [Path(f) for f in files]
        self.table = tuple(table)
        self.description = ", ".join(f.name for f in self.files)
        self.report = KeyReport()
        self.entries: dict[str, list[tuple[int, str]]] = {}  # ours -> [(file index, official key)], file order
        self._mapped: dict[int, dict[str, Tensor]] = {}  # zip-format files stay mapped (address space, not memory)
        wrong: list[str] = []
        for i, path in enumerate(self.files):
            index = _index_file(path)
            if not is_legacy_pickle(path):
                self._mapped[i] = index
            for key, t in index.items():
                t = torch.empty(t.shape, dtype=t.dtype, device="meta")  # transforms run on shapes only
                comp = _component_for(key, self.table)
                outs = comp.try_convert_key(key, t) if comp is not None else None
                targets = [(ours, v) for ours, v in (outs or []) if ours in expected]
                if outs is None or (outs and not targets):
                    self.report.skipped.append((key, t.numel()))
                    continue
                for ours, v in targets:
                    if tuple(v.shape) != tuple(expected[ours].shape):
                        wrong.append(f"{key} -> {ours}: file {tuple(v.shape)} vs model {tuple(expected[ours].shape)}")
                        continue
                    self.entries.setdefault(ours, []).append((i, key))
        problems = []
        missing = sorted(k for k in expected if k not in self.entries)
        if missing:
            problems.append(_listing("keys of the model are in none of the checkpoint files", missing))
        if wrong:
            problems.append(_listing("shape mismatches", wrong))
        if strict_keys and self.report.skipped:
            keys = [k for k, _ in self.report.skipped]
            problems.append(_listing("checkpoint keys map to no component (strict_keys)", keys))
        if problems:
            raise CheckpointKeyError(f"{self.description} do not fit the model: " + "\n".join(problems))
        if self.report.skipped:
            log.warning("official weights: %s", self.report.summary())

    def keys(self) -> set[str]:
        return set(self.entries)

    def read(self, keys: Iterable[str], device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        wanted = set(keys)
        needed: dict[int, set[str]] = {}  # file index -> official keys to read
        for ours in wanted:
            for i, key in self.entries[ours]:
                needed.setdefault(i, set()).add(key)
        found: dict[str, list[tuple[str, Tensor]]] = {}  # ours -> [(official key, tensor)] in file order
        for i in sorted(needed):
            mapped = i in self._mapped
            state = self._mapped[i] if mapped else read_tensor_file(self.files[i])  # legacy files: read whole
            for key, t in state.items():
                if key not in needed[i]:
                    continue
                comp = _component_for(key, self.table)
                assert comp is not None
                converted: dict[int, Tensor] = {}  # id(source view) -> cast tensor (a tied pair stays one tensor)
                for ours, v in comp.convert_key(key, t):
                    if ours in wanted:
                        if id(v) not in converted:
                            converted[id(v)] = cast(v, device, dtype)
                        found.setdefault(ours, []).append((key, converted[id(v)]))
                if mapped:
                    release_pages(t)
            del state
        return {ours: self._resolve(ours, found[ours]) for ours in wanted}

    def _resolve(self, ours: str, candidates: list[tuple[str, Tensor]]) -> Tensor:
        """The later official key wins, as in the official loader; a difference is reported."""
        kept_key, kept = candidates[-1]
        for key, t in candidates[:-1]:
            equal = t.shape == kept.shape and torch.equal(t, kept)
            entry = {"ours": ours, "kept": kept_key, "dropped": key, "equal": equal}
            if entry not in self.report.overrides:
                self.report.overrides.append(entry)
                if not equal:
                    log.warning(
                        "official weights: %s and %s both map to %s and differ: %s wins", key, kept_key, ours, kept_key
                    )
        return kept


def _index_file(path: Path) -> dict[str, Tensor]:
    """Official key -> a tensor with the file's shape and dtype (memory-mapped, or meta for legacy files)."""
    if not is_legacy_pickle(path):
        return read_tensor_file(path)  # memory-mapped: nothing is read until touched
    try:
        state = torch.load(str(path), map_location="meta", weights_only=True)
    except (FileNotFoundError, PermissionError):
        raise
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise corrupt(path, e) from None
    return dict(state.get("state_dict", state)) if isinstance(state, Mapping) else {}


_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4


def release_pages(t: Tensor) -> None:
    """Drops the pages of a memory-mapped, never-written CPU tensor from this process's resident set (Linux;
    the data stays in the file and is read again if touched). Reading a 3.5 GB UNet file would otherwise
    count twice in the peak memory: once mapped, once converted. Never call it on a tensor in anonymous
    memory: it would zero it."""
    if sys.platform != "linux" or t.device.type != "cpu" or t.numel() == 0:
        return
    start = t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size()
    end = start + t.numel() * t.element_size()
    first, last = -(-start // _PAGE) * _PAGE, end // _PAGE * _PAGE  # whole pages inside the tensor only
    if last > first:
        _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC
