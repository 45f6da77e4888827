"""`python -m codi generate --batch` across processes: under `torchrun` or `accelerate launch` each process loads
one model on its own device and generates its share of the requests (accelerate's `split_between_processes`);
the first process then merges every process's summary into DIR/summary.json."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUMMARY = "summary.json"
ERRORS = "errors.jsonl"


def launched() -> bool:
    """True when started by torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Share:
    """This process's part of a batch: its requests, the device to load the model on, and how to meet the others."""

    requests: list[dict[str, Any]]
    device: str | None  # None: as asked on the command line (single process)
    rank: int = 0
    world: int = 1
    state: Any = None  # accelerate's PartialState when launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


@contextmanager
def share_of(requests: Sequence[dict[str, Any]], device: str | None) -> Iterator[Share]:
    """This process's share of `requests` (all of them when not launched across processes).

    Args:
        requests: the batch, in file order.
        device: the --device asked for: 'cpu' keeps every process on the CPU (gloo); otherwise each process gets
            its own accelerator (cuda:<local rank>).
    """
    if not launched():
        yield Share(list(requests), device)
        return
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    with state.split_between_processes(list(requests)) as mine:
        dev = "cpu" if device == "cpu" else str(state.device)
        yield Share(list(mine), dev, state.process_index, state.num_processes, state)


def write_summary(out: Path, share: Share, rows: list[dict[str, Any]]) -> Path | None:
    """Each process writes its rows; after all are done, the first merges them (in request-id order) into
    DIR/summary.json and returns its path (None in the other processes)."""
    out.mkdir(parents=True, exist_ok=True)
    part = out / f".summary-{share.rank}.json"
    part.write_text(json.dumps(rows))
    share.wait()
    if not share.is_main:
        return None
    merged = []
    for rank in range(share.world):
        path = out / f".summary-{rank}.json"
        merged += json.loads(path.read_text())
        path.unlink()
    merged.sort(key=lambda r: str(r["id"]))
    failed = sum(1 for r in merged if r.get("error"))
    summary = {"processes": share.world, "requests": len(merged), "failed": failed, "results": merged}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    errors = out / ERRORS
    errors.unlink(missing_ok=True)
    if failed:  # one line per failed request, the batch went on without it
        errors.write_text(
            "".join(json.dumps({"id": r["id"], "error": r["error"]}) + "\n" for r in merged if r.get("error"))
        )
    return out / SUMMARY
