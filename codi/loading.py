"""Strict loading of official CoDi checkpoints into our modules through one explicit key table.

The table is a list of `ComponentMap`s (official prefix -> our prefix), each with ordered `KeyRule`s
that rename, split, transform or deliberately drop official keys. Every official key must match a
rule, every key of our module must be produced, and shapes must agree: anything else raises a
`CheckpointKeyError` that names the offending keys.
"""

from __future__ import annotations

import re
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
        local = key[len(self.official_prefix) :]
        for rule in self.rules:
            out = rule.apply(local, value)
            if out is not None:
                return [(self.our_prefix + k, v) for k, v in out]
        raise CheckpointKeyError(f"no rule of the {self.official_prefix!r} map matches official key {key!r}")


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


def read_tensor_file(path: str | Path) -> dict[str, Tensor]:
    """Reads a .safetensors file, or a .pth/.ckpt pickle with `weights_only=True` (never arbitrary code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointKeyError(f"{path} holds a {type(obj).__name__}, not a flat state dict")
    return dict(obj)
