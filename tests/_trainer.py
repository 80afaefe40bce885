"""One way to build a small, quiet Lightning ``Trainer`` for the callback tests."""

from __future__ import annotations

from typing import Any


def quiet_trainer(pl: Any, callbacks: list | tuple = (), max_steps: int = 3, **overrides: Any) -> Any:
    """A CPU, single-device ``pl.Trainer`` with no logger, checkpoints, progress bar or summary."""
    options = dict(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    options.update(overrides)
    return pl.Trainer(**options)
