"""CoDi Studio: the Gradio app over the CoDi engine (`create_demo(engine)` in ui.app)."""

from __future__ import annotations

from typing import Any

__all__ = ["create_demo"]


def __getattr__(name: str) -> Any:
    if name == "create_demo":  # imported lazily: the recording and example helpers do not need gradio
        from ui.app import create_demo

        return create_demo
    raise AttributeError(name)
