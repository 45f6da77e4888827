"""The Studio under load (issue 20, item 7): concurrent API callers against `python app.py`, a full queue, and the
memory of one process over many requests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import torch
from app_process import running_app
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

from ui.engine import Engine
from ui.examples import DEFAULT_EXAMPLES
from ui.handlers import FORM_FIELDS, RESULT_FIELDS, Studio

API_FIELDS = [f for f in RESULT_FIELDS if f != "run_folder"]  # a gr.State: not sent to API clients


def app_args(work: Path, *extra: str) -> list[str]:
    return ["--model", "tiny", "--runs", str(work / "runs"), "--recordings", str(work / "recordings"), *extra]


def app_env(work: Path) -> dict[str, str]:
    """One thread (the tiny model is fastest so); the example gallery's cards go to `work`, not the repository."""
    return {"OMP_NUM_THREADS": "1", "GRADIO_EXAMPLES_CACHE": str(work / "examples-cache")}


def generate(client: Client, seed: int, steps: int = 2) -> dict:
    """text -> image through the public /generate endpoint, as README's API section calls it."""
    values = client.predict(
        text="a red circle", outputs=["image"], steps=steps, seed=seed, randomize_seed=False, api_name="/generate"
    )
    return dict(zip(API_FIELDS, values))


@pytest.mark.slow
def test_ten_concurrent_callers_three_requests_each(tmp_path):
    """10 gradio_client callers x 3 requests at once: all 30 complete, each with its own seed's image; callers that
    ask for the same seed get the same picture (requests do not leak into each other while queued)."""
    with running_app(app_args(tmp_path), tmp_path, app_env(tmp_path)) as url:
        clients = [Client(url, verbose=False) for _ in range(10)]

        def caller(i: int) -> list[dict]:
            return [generate(clients[i], seed=(i % 5) * 3 + j) for j in range(3)]  # callers i and i+5 repeat

        start = time.perf_counter()
        with ThreadPoolExecutor(len(clients)) as pool:
            results = list(pool.map(caller, range(len(clients))))
        seconds = time.perf_counter() - start
    print(f"\n[load] 30 requests from 10 concurrent callers in {seconds:.1f} s")  # measured: 6.9-12.8 s on one core
    done = [r for rs in results for r in rs]
    assert len(done) == 30
    pictures: dict[int, bytes] = {}
    for i, rs in enumerate(results):
        for j, r in enumerate(rs):
            seed = (i % 5) * 3 + j
            assert r["seed"] == seed and r["params"]["seed"] == seed and f"seed `{seed}`" in r["summary"]
            assert r["text_out"] is None and r["video_out"] is None and r["audio_out"] is None
            image = Image.open(r["image_out"])
            assert image.size == (64, 64) and image.mode == "RGB"
            pixels = image.tobytes()
            assert pictures.setdefault(seed, pixels) == pixels, f"seed {seed} gave two different pictures"
    assert len(pictures) == 15
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def _join(url: str, fn_index: int) -> tuple[int, dict]:
    """One raw request to join the queue (what the page and gradio_client send first): (HTTP status, body)."""
    body = {"data": [None] * len(FORM_FIELDS), "fn_index": fn_index, "session_hash": "raw-join", "event_data": None}
    request = urllib.request.Request(
        url + "gradio_api/queue/join", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_a_full_queue_refuses_with_a_message(tmp_path):
    """--queue-size 1: one request runs, one waits, the others are refused at once with Gradio's queue-full
    message (HTTP 503 "Queue is full. Max size is 1 ..."; gradio_client's QueueError), not a traceback."""
    with running_app(app_args(tmp_path, "--queue-size", "1"), tmp_path, app_env(tmp_path)) as url:
        config = json.loads(urllib.request.urlopen(url + "config", timeout=10).read())
        (fn_index,) = [d["id"] for d in config["dependencies"] if d.get("api_name") == "generate"]
        clients = [Client(url, verbose=False) for _ in range(6)]
        with ThreadPoolExecutor(len(clients)) as pool:  # 200 steps: ~3 s each on one core, so they overlap
            futures = [pool.submit(generate, c, seed=i, steps=200) for i, c in enumerate(clients)]
            pending = set(futures)
            while pending:  # the first refusal comes back at once, while one request runs and one waits
                finished, pending = wait(pending, timeout=120, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), QueueError) for f in finished):
                    break
            status, body = _join(url, fn_index)  # so the queue is still full now
            outcomes = []
            for f in futures:
                try:
                    outcomes.append(f.result(timeout=120))
                except (QueueError, AppError) as e:
                    outcomes.append(e)
    refused = [o for o in outcomes if isinstance(o, Exception)]
    done = [o for o in outcomes if isinstance(o, dict)]
    print(f"\n[load] queue size 1, 6 callers: {len(done)} done, {len(refused)} refused: {refused[0]!s}; {body}")
    assert status == 503 and body == {"detail": "Queue is full. Max size is 1 and size is 1."}
    assert len(done) >= 1 and len(refused) >= 1 and len(done) + len(refused) == 6
    assert all(type(e) is QueueError and str(e) == "Queue is full! Please try again." for e in refused)
    assert all(Path(d["image_out"]).is_file() and d["params"]["params"]["steps"] == 200 for d in done)
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def _proc_mb(key: str) -> float:
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS / VmHWM from /proc (Linux)")
def test_memory_stays_flat_over_fifty_requests(tmp_path):
    """50 generations through the Studio's generate handler (five kinds in turn: text->image, text->audio,
    image->text, text->video+audio, text->image+text with 2 samples; run folders written and pruned) in one
    process: the resident memory settles after the first requests and does not grow after that."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = Engine.load("tiny", runs_dir=tmp_path / "runs", keep_runs=8)
        studio = Studio(engine, tmp_path / "recordings", DEFAULT_EXAMPLES)
        image = str(DEFAULT_EXAMPLES.parent / "examples" / "image-to-text" / "image.png")
        base = dict.fromkeys(FORM_FIELDS) | {f"{m}_weight": 1.0 for m in ("text", "image", "video", "audio")}
        base |= {"text": "a red circle", "steps": 2, "guidance": 2.0, "randomize_seed": False, "num_samples": 1}
        kinds = [
            {"outputs": ["image"]},
            {"outputs": ["audio"]},
            {"outputs": ["text"], "text": "", "image": image},
            {"outputs": ["video", "audio"]},
            {"outputs": ["image", "text"], "num_samples": 2},
        ]
        if Path("/proc/self/clear_refs").exists():
            Path("/proc/self/clear_refs").write_text("5")  # the peak below is this test's, not the session's
        rss = []
        for i in range(50):
            form = base | kinds[i % len(kinds)] | {"seed": i}
            result = dict(zip(RESULT_FIELDS, studio.generate(*[form[k] for k in FORM_FIELDS])))
            assert result["seed"] == i
            rss.append(_proc_mb("VmRSS:"))
        peak = _proc_mb("VmHWM:")
    finally:
        torch.set_num_threads(threads)
    print(
        f"\n[memory] RSS at request 1: {rss[0]:.1f} MB, 10: {rss[9]:.1f} MB, 50: {rss[49]:.1f} MB, peak {peak:.1f} MB"
    )
    assert len(list((tmp_path / "runs").iterdir())) == 8  # the run folders are pruned too
    # Measured on one core (tiny model, one thread): RSS 695.8 MB after request 1, 735.2 after 10, 735.3 after 50
    # alone in a process; 768.5 / 805.4 / 805.5 MB under pytest (peak 805.5). Growth from request 10 to 50 was
    # +0.03 to +4 MB over repeated runs (allocator noise), +0.8 MB to request 100. Keeping every Run object on
    # purpose (~0.12 MB each: a 64x64 image, 8 frames, 1 s of audio) measured +5.0 MB, inside that noise; so the
    # bound targets what matters: 16 MB over 40 requests catches any leak of 0.4 MB or more per request (a
    # request's tensors, a model part loaded again per request), with 4x margin over the noise seen.
    assert rss[49] - rss[9] < 16, rss
    assert max(rss[9:]) - rss[9] < 16, rss
