"""ZeroGPU: the generation handler runs in `spaces.GPU` with a duration that grows with the request."""

from __future__ import annotations

import functools
import sys
import types

import pytest

from ui.zerogpu import gpu_seconds, on_gpu


def handler(text: str = "", outputs: list[str] | None = None, steps: int | None = None, num_samples: int = 1):
    return f"{text}:{outputs}:{steps}"


@pytest.fixture
def fake_spaces(monkeypatch: pytest.MonkeyPatch) -> list:
    """A stand-in `spaces` package whose GPU decorator records the duration callable it is given."""
    calls: list = []
    module = types.ModuleType("spaces")
    module.__spec__ = types.SimpleNamespace(name="spaces", loader=None, submodule_search_locations=None)

    def gpu(duration=None):
        def wrap(fn):
            @functools.wraps(fn)  # as spaces.GPU does: gradio reads the handler's signature through it
            def wrapped(*args, **kwargs):
                calls.append(duration(*args, **kwargs))
                return fn(*args, **kwargs)

            wrapped.on_zero_gpu = True
            return wrapped

        return wrap

    module.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", module)
    return calls


def test_without_spaces_the_handler_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spaces", None)  # not importable
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert on_gpu(handler, 25) is handler


def test_the_handler_is_wrapped_with_a_duration_that_grows_with_steps(fake_spaces: list) -> None:
    wrapped = on_gpu(handler, default_steps=25)
    assert wrapped.on_zero_gpu
    assert wrapped("rain", ["image"], 10) == "rain:['image']:10"  # runs the handler
    wrapped("rain", ["image"], 100)
    wrapped("rain", outputs=["video", "audio"], steps=100, num_samples=2)
    short, long, joint = fake_spaces
    assert short < long < joint <= 300
    wrapped("rain", ["image"])  # no steps given: the model's default
    assert fake_spaces[-1] == gpu_seconds(25, ["image"], 1, 25)


def test_studio_page_uses_the_wrapper(fake_spaces: list, tmp_path) -> None:
    from ui.app import create_demo
    from ui.engine import Engine
    from ui.examples import DEFAULT_EXAMPLES

    engine = Engine.load("tiny", runs_dir=tmp_path / "runs")
    demo = create_demo(engine, recordings_dir=tmp_path / "rec", examples_path=DEFAULT_EXAMPLES)
    fns = [getattr(f.fn, "on_zero_gpu", False) for f in demo.fns.values() if f.api_name == "generate"]
    assert fns == [True]
