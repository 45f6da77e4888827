"""Loading official CoDi checkpoints into our modules through one explicit key table.

The table is a list of `ComponentMap`s (official prefix -> our prefix), each with ordered `KeyRule`s
that rename, split, transform or deliberately drop official keys. Every key of our module must be
produced and shapes must agree, or a `CheckpointKeyError` names the offending keys. Official keys that
map to no key of ours (the released files carry such tensors) are skipped and reported in a
`KeyReport`, or refused with `strict_keys=True`.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

Transform = Callable[[Tensor], tuple[Tensor, ...]]


class CheckpointKeyError(KeyError):
    """A checkpoint and a module disagree on keys or shapes; the message names every offender."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class KeyRule:
    """Official keys fully matching `pattern` become `targets` (re.sub templates); no target = drop."""

    pattern: str
    targets: tuple[str, ...]
    transform: Transform | None = None
    why: str = ""

    def __post_init__(self) -> None:
        if not self.targets and not self.why:
            raise ValueError(f"dropping {self.pattern!r} needs a reason")

    def apply(self, key: str, value: Tensor) -> list[tuple[str, Tensor]] | None:
        """Returns the (our key, tensor) pairs for `key`, [] for a drop, None when it does not match."""
        match = re.fullmatch(self.pattern, key)
        if match is None:
            return None
        if not self.targets:
            return []
        values = self.transform(value) if self.transform else (value,)
        if len(values) != len(self.targets):
            raise ValueError(f"rule {self.pattern!r} made {len(values)} tensors for {len(self.targets)} keys")
        return [(match.expand(t), v) for t, v in zip(self.targets, values)]


def rename(pattern: str, target: str, transform: Callable[[Tensor], Tensor] | None = None) -> KeyRule:
    """One official key -> one of ours, optionally reshaped."""
    return KeyRule(pattern, (target,), (lambda t: (transform(t),)) if transform else None)


def split(pattern: str, targets: Iterable[str], dim: int = 0) -> KeyRule:
    """One official key -> equal chunks along `dim` (e.g. a fused qkv projection)."""
    names = tuple(targets)
    return KeyRule(pattern, names, lambda t: tuple(t.chunk(len(names), dim)))


def drop(pattern: str, why: str) -> KeyRule:
    """An official key we deliberately do not load (a recomputed buffer, a tied duplicate...)."""
    return KeyRule(pattern, (), None, why)


IDENTITY = rename(r"(.*)", r"\1")


@dataclass(frozen=True)
class ComponentMap:
    """Official keys under `official_prefix` map onto our keys under `our_prefix` through `rules`."""

    official_prefix: str
    our_prefix: str
    rules: tuple[KeyRule, ...] = field(default=(IDENTITY,))

    def convert_key(self, key: str, value: Tensor) -> list[tuple[str, Tensor]]:
        out = self.try_convert_key(key, value)
        if out is None:
            raise CheckpointKeyError(f"no rule of the {self.official_prefix!r} map matches official key {key!r}")
        return out

    def try_convert_key(self, key: str, value: Tensor) -> list[tuple[str, Tensor]] | None:
        """Our (key, tensor) pairs for an official key ([] for a deliberate drop), None when no rule matches."""
        local = key[len(self.official_prefix) :]
        for rule in self.rules:
            out = rule.apply(local, value)
            if out is not None:
                return [(self.our_prefix + k, v) for k, v in out]
        return None


@dataclass
class KeyReport:
    """What loading a set of checkpoint files skipped or resolved, for the log and result.json."""

    skipped: list[tuple[str, int]] = field(default_factory=list)  # (official key, numel) mapping to nothing
    overrides: list[dict[str, object]] = field(default_factory=list)  # two official keys -> one of ours

    def to_json(self, limit: int = 10) -> dict[str, object]:
        return {
            "skipped_keys": len(self.skipped),
            "skipped_numel": sum(n for _, n in self.skipped),
            "skipped_first": [k for k, _ in self.skipped[:limit]],
            "overrides": self.overrides[:limit],
        }

    def summary(self) -> str:
        """One line for the log ('' when nothing was skipped or overridden)."""
        parts = []
        if self.skipped:
            names = ", ".join(k for k, _ in self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
            numel = sum(n for _, n in self.skipped)
            parts.append(f"skipped {len(self.skipped)} checkpoint tensors of no component ({numel:,} numel: {names})")
        differ = [o for o in self.overrides if o.get("equal") is False]
        if differ:
            parts.append(
                "; ".join(f"{o['ours']}: {o['kept']!r} overrides {o['dropped']!r} (they differ)" for o in differ)
            )
        return "; ".join(parts)


def _component_for(key: str, table: Iterable[ComponentMap]) -> ComponentMap | None:
    best: ComponentMap | None = None
    for comp in table:
        if key.startswith(comp.official_prefix) and (
            best is None or len(comp.official_prefix) > len(best.official_prefix)
        ):
            best = comp
    return best


def convert_official_state_dict(official: Mapping[str, Tensor], table: Iterable[ComponentMap]) -> dict[str, Tensor]:
    """Maps an official flat state dict onto our key names.

    Args:
        official: official key -> tensor (any subset of the full checkpoint).
        table: the component maps to use.
    Returns:
        our key -> tensor. Raises CheckpointKeyError naming every official key no rule covers, and
        any two official keys that land on one of ours with different values.
    """
    table = tuple(table)
    out: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in official.items():
        comp = _component_for(key, table)
        if comp is None:
            unknown.append(key)
            continue
        for ours, tensor in comp.convert_key(key, value):
            if ours in out:
                same = out[ours].shape == tensor.shape and (
                    tensor.is_meta or torch.equal(out[ours].to(tensor.dtype), tensor)
                )
                if not same:
                    raise CheckpointKeyError(f"official keys {source[ours]!r} and {key!r} both map to {ours!r}")
                continue
            out[ours] = tensor
            source[ours] = key
    if unknown:
        raise CheckpointKeyError(_listing("unexpected official keys (no component map)", unknown))
    return out


def _listing(title: str, keys: list[str], limit: int = 20) -> str:
    shown = "\n  ".join(keys[:limit])
    more = f"\n  ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {title}:\n  {shown}{more}"


def check_against_module(ours: Mapping[str, Tensor], module: nn.Module, *, complete: bool = True) -> None:
    """Raises CheckpointKeyError if `ours` has keys `module` lacks, wrong shapes, or (if `complete`) gaps."""
    expected = module.state_dict()
    unexpected = sorted(k for k in ours if k not in expected)
    wrong = sorted(
        f"{k}: checkpoint {tuple(ours[k].shape)} vs module {tuple(expected[k].shape)}"
        for k in ours
        if k in expected and tuple(ours[k].shape) != tuple(expected[k].shape)
    )
    missing = sorted(k for k in expected if k not in ours) if complete else []
    problems = []
    if unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if missing:
        problems.append(_listing("missing keys", missing))
    if wrong:
        problems.append(_listing("shape mismatches", wrong))
    if problems:
        raise CheckpointKeyError("checkpoint does not fit the module: " + "\n".join(problems))


def load_into(module: nn.Module, ours: Mapping[str, Tensor], *, complete: bool = True) -> set[str]:
    """Copies `ours` into `module` after the strict checks; returns the keys loaded."""
    check_against_module(ours, module, complete=complete)
    module.load_state_dict(dict(ours), strict=complete)
    return set(ours)


def load_official_component(module: nn.Module, official: Mapping[str, Tensor], comp: ComponentMap) -> None:
    """Loads one component's official-named weights (e.g. a parity fixture) strictly into `module`."""
    local = ComponentMap(comp.official_prefix, "", comp.rules)
    wanted = {k: v for k, v in official.items() if k.startswith(comp.official_prefix)}
    load_into(module, convert_official_state_dict(wanted, [local]))


class CorruptCheckpointError(OSError):
    """A checkpoint file is truncated or damaged; the message names it and says to download it again."""


def corrupt(path: str | Path, error: BaseException) -> CorruptCheckpointError:
    """The error for a file torch cannot read: names it and says to download it again."""
    reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
    return CorruptCheckpointError(f"{path} is damaged or incomplete ({reason}); delete it and download it again")


def is_legacy_pickle(path: str | Path) -> bool:
    """True for files written by torch.save's legacy (non-zip) format, which cannot be memory-mapped."""
    return not zipfile.is_zipfile(str(path))


def read_tensor_file(path: str | Path) -> dict[str, Tensor]:
    """Reads a .safetensors file, or a .pth/.ckpt pickle with `weights_only=True` (never arbitrary code).

    Zip-format pickles are memory-mapped (tensors are read from disk when touched); legacy-format ones are
    read whole. A truncated or damaged file raises CorruptCheckpointError naming it.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=not is_legacy_pickle(path))
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as e:
        if isinstance(e, RuntimeError) and "weights_only" in str(e) and "Unsupported" in str(e):
            raise  # a pickle that needs code to load: refused, not corrupt
        raise corrupt(path, e) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointKeyError(f"{path} holds a {type(obj).__name__}, not a flat state dict")
    return dict(obj)
