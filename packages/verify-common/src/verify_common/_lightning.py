"""The Lightning callback base: lazy import, both namespaces, rank-zero warnings.

Importing a check must never import Lightning, and a callback must subclass
the ``Callback`` class of the namespace the user's ``Trainer`` comes from
(``lightning.pytorch`` or ``pytorch_lightning``), or the Trainer rejects it.
The public callback classes therefore stay plain Python classes; creating
one builds (once, then cached) a concrete subclass that also derives from
every installed Lightning ``Callback``, so one object fits either Trainer.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from torch import nn

from ._hooks import forward_hooks
from ._inputs import CallArgs
from ._report import emit_warning

_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")
# Checks running right now.  A check runs the model, so the capture hooks of other
# verification callbacks on the same module would fire inside it (and remove themselves
# mid-call); while this is non-empty they let the call pass untouched.
_RUNNING_CHECKS: list[int] = []


def lightning_callback_classes(install_command: str) -> tuple[type, ...]:
    """The ``Callback`` classes of every installed Lightning namespace.

    Raises ``ImportError`` ending with ``install_command`` when neither is installed.
    """
    found = []
    for namespace in _NAMESPACES:
        try:
            module = importlib.import_module(namespace)
        except ImportError:
            continue
        found.append(module.Callback)
    if not found:
        raise ImportError(
            "This callback needs PyTorch Lightning (lightning.pytorch or pytorch_lightning 2.x), "
            f"which is not installed. Install it with: {install_command}"
        )
    return tuple(found)


@functools.lru_cache(maxsize=None)
def _concrete_class(public: type, bases: tuple[type, ...]) -> type:
    concrete = type(public.__name__, (public, *bases), {"__module__": public.__module__, "_public_class": public})
    concrete.__qualname__ = public.__qualname__
    return concrete


def _forward_redirected(module: nn.Module) -> bool:
    # Lightning's redirection sets an instance ``forward`` that is not the class's method,
    # and puts the bound method back (still an instance attribute) once it has run.
    patched = vars(module).get("forward")
    return patched is not None and getattr(patched, "__func__", None) is not getattr(type(module), "forward", None)


def _rebuild_callback(public: type, state: dict) -> Any:
    # Pickling (DDP spawn, deepcopy) goes through the public class so the
    # dynamically built subclass never has to be importable by name.
    callback = public.__new__(public)
    callback.__dict__.update(state)
    return callback


class _ScopedModule(nn.Module):
    """Calls one submodule under its qualified name, so a report says 'net.0', not '0'.

    Registering the submodule here changes nothing on it or on its parent.
    """

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__()
        self.scoped_name = name
        self.add_module(name, module)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._modules[self.scoped_name](*args, **kwargs)


class VerificationCallback:
    """Runs one check once, before or at the first training batch, and reports it.

    Subclasses set ``install_command`` and ``warning_category`` and implement
    ``run_check(pl_module, call_args) -> (ok, message)``.  The check runs on
    ``example_input_array`` at ``on_train_start`` when the module has one,
    otherwise on the arguments of the module's first forward call in training,
    captured by a pre-hook that removes itself before the check runs.  A
    training step that calls submodules (``self.net(x)``) rather than the
    module itself gets each directly called submodule with parameters checked
    on its own first inputs, under its qualified name.
    """

    install_command = 'pip install "verify-common"'
    warning_category: type[Warning] = UserWarning

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        bases = lightning_callback_classes(cls.install_command)
        return object.__new__(_concrete_class(cls, bases))

    def __init__(self, warn: bool = True, error: bool = False) -> None:
        self.warn = warn
        self.error = error
        self.has_run = False
        self.result: bool | None = None
        self.message: str | None = None
        self.checked: list[str] = []
        self._hooks: Any = None

    def __reduce__(self) -> tuple:
        public = type(self).__dict__.get("_public_class", type(self))
        state = {**self.__dict__, "_hooks": None}
        return (_rebuild_callback, (public, state))

    def run_check(self, pl_module: nn.Module, call_args: CallArgs) -> tuple[bool, str]:
        """Run the check; return ``(ok, message)``."""
        raise NotImplementedError

    # -- Lightning hooks ---------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        example = getattr(pl_module, "example_input_array", None)
        if not self.has_run and example is not None:
            self._run(trainer, pl_module, "", CallArgs.from_input_array(example))

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        if self.has_run or self._hooks is not None:
            return
        # Parameter-free children (losses, metrics, activations) have nothing to check.
        children = [(name, child) for name, child in pl_module.named_children() if next(child.parameters(), None) is not None]
        hooks = forward_hooks([("", pl_module), *children], pre_hook=self._pre_hook(trainer))
        hooks.__enter__()
        self._hooks = hooks

    def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, *args: Any, **kwargs: Any) -> None:
        waiting = self._hooks is not None and not self.checked
        self._remove_hooks()
        self.has_run = True
        if waiting and getattr(trainer, "is_global_zero", True):
            # Nothing was called that could be checked: say so once instead of checking nothing.
            emit_warning(
                f"{type(self).__name__} did not run: the first training step called neither "
                f"{type(pl_module).__name__} itself nor a submodule with parameters, so no model input "
                "could be captured. Set `example_input_array` on the LightningModule to check it.",
                UserWarning,
                stacklevel=2,
            )

    def on_exception(self, trainer: Any, pl_module: nn.Module, exception: BaseException) -> None:
        self._remove_hooks()

    def teardown(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        self._remove_hooks()

    # -- internals ---------------------------------------------------------------
    def _pre_hook(self, trainer: Any) -> Any:
        def capture(name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
            if _RUNNING_CHECKS or self.has_run or name in self.checked:
                return
            call_args = CallArgs(tuple(args), dict(kwargs))
            if name == "":
                if _forward_redirected(module):
                    # Under DDP (and other wrapped strategies) Lightning calls the module once with
                    # ``forward`` patched to ``training_step`` and the step's arguments; the real
                    # forward call with the model's inputs follows inside the step.  Wait for it.
                    return
                # The whole module is called: one check covers every submodule.
                self._remove_hooks()
                self._run(trainer, module, "", call_args)
            else:
                # The step calls this submodule directly; the module itself may never be called.
                self._run(trainer, _ScopedModule(name, module), name, call_args)

        return capture

    def _remove_hooks(self) -> None:
        hooks, self._hooks = self._hooks, None
        if hooks is not None:
            hooks.__exit__(None, None, None)

    def _run(self, trainer: Any, module: nn.Module, name: str, call_args: CallArgs) -> None:
        self.checked.append(name)
        if name == "":
            self.has_run = True
        _RUNNING_CHECKS.append(id(self))
        try:
            ok, message = self.run_check(module, call_args)
        except Exception as exc:
            if name == "":
                raise
            # A submodule's inputs may not suit the check (no batch, say); training goes on.
            ok, message = True, None
            if getattr(trainer, "is_global_zero", True):
                emit_warning(f"{type(self).__name__} could not check submodule '{name}': {exc}", UserWarning, stacklevel=2)
        finally:
            _RUNNING_CHECKS.pop()
        self.result = ok if self.result is None else (self.result and ok)
        if ok:
            return
        self.message = message if self.message is None else f"{self.message}\n\n{message}"
        if self.error:
            raise RuntimeError(message)
        if self.warn and getattr(trainer, "is_global_zero", True):
            emit_warning(message, self.warning_category, stacklevel=2)
