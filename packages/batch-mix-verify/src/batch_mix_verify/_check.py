"""The batch-mixing check: one forward pass, k backward passes, exact zeros.

Every sample gets a distinct k-bit code with the same number of ones (k the
smallest with C(k, k//2) >= B).  Pass t seeds the backward from the output
samples whose bit t is 1, with random positive weights so that contributions
cannot cancel, and requires exactly zero gradient on the input samples whose
bit t is 0.  Two distinct codes of equal weight are never contained in one
another, so for every ordered pair (i, j), i != j, some pass seeds i and
inspects j: k passes test all B(B-1) dependencies, one-way ones included.

Gradients are taken only with respect to the inputs (parameters stop
requiring grad for the duration), from one forward pass, so dropout masks are
the same in every pass.  Only when mixing is found does a second, recorded
forward pass run to list the dependent pairs and find the first module whose
own output rows depend on other rows of its own input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from verify_common import (
    CallArgs,
    VerificationError,
    call_model,
    capture_rng_state,
    copy_to_device,
    forward_hooks,
    iter_tensors,
    materializable_copy,
    model_device,
    preserved_state,
    resolve_input,
    restore_rng_state,
)

from ._findings import BatchMixingReport, MixingModule, SampleDependency
from ._integer import _BmIntegerFollower, _bm_map_mixes, _bm_root_provenance
from ._mapping import (
    _bm_batch_axis,
    _bm_codes,
    _bm_flatten_rows,
    _bm_is_differentiable,
    _bm_output_rows,
    default_input_mapping,
    default_output_mapping,
)

_BM_CHECK_NAME = "BatchGradientVerification"
_BM_SEED = 0x5EED
_BM_HALF_SCALE = 256.0  # weight scale for float16 leaves (see _bm_weight_scale)


class BatchMixingWarning(UserWarning):
    """Issued by the callback when the model mixes data across the batch dimension."""


class BatchGradientVerificationError(VerificationError):
    """The batch-mixing check could not run on the given model and input (the message says why).

    >>> import torch
    >>> try:
    ...     BatchGradientVerification(torch.nn.Linear(3, 2)).check(torch.rand(1, 3))
    ... except BatchGradientVerificationError as exc:
    ...     print(exc)
    BatchGradientVerification: needs at least 2 samples to find mixing, but the batch size is 1 ...
    """


class BatchGradientVerification:
    """Checks that no output sample of ``model`` depends on another input sample.

    >>> import torch
    >>> verification = BatchGradientVerification(torch.nn.Linear(3, 2))
    >>> verification.check(input_array=torch.rand(32, 3))
    True
    >>> verification.report.backward_passes  # 7 passes cover all 992 ordered pairs of 32 samples
    7
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.report: BatchMixingReport | None = None

    def check(
        self,
        input_array: Any = None,
        input_mapping: Callable[[Any], list[torch.Tensor]] | None = None,
        output_mapping: Callable[[Any], torch.Tensor] | None = None,
        sample_idx: int | None = None,
        batch_dim: int = 0,
    ) -> bool:
        """Run the check; return ``True`` when no output sample depends on another input sample.

        Args:
            input_array: the example input (tuple: positional arguments, dict: keyword
                arguments, else the single argument); ``None`` uses ``model.example_input_array``.
                The caller's tensors are copied, never modified.
            input_mapping: ``input -> list of tensors`` selecting the batch tensors of the input;
                by default every tensor with the batch size of the first (``default_input_mapping``).
                Integer tensors are followed to the first floating tensors computed from them.
            output_mapping: ``output -> tensor`` whose rows along ``batch_dim`` are the output
                samples; by default all batch tensors of the output (``default_output_mapping``).
            sample_idx: ``None`` checks every ordered pair of samples; an integer checks only
                that output sample against all other input samples (one backward pass).
            batch_dim: the batch dimension of inputs and outputs (1 for ``(T, B, F)`` data).

        Returns:
            ``True`` when nothing was found; the details are in ``self.report``.

        Raises:
            BatchGradientVerificationError: no tensor in the input, batch size 1, batch sizes that
                disagree, ``batch_dim`` or ``sample_idx`` out of range, an output that is not
                differentiable, or a forward pass that raised.

        >>> import torch
        >>> class Leaky(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x.cumsum(0)  # sample i sees samples 0..i-1
        >>> verification = BatchGradientVerification(Leaky())
        >>> verification.check(torch.rand(3, 2), sample_idx=0)
        True
        >>> verification.check(torch.rand(3, 2))
        False
        >>> verification.report.pairs
        [(1, 0), (2, 0), (2, 1)]
        """
        self.report = None
        self.report = _bm_run(self.model, input_array, input_mapping, output_mapping, sample_idx, batch_dim)
        return self.report.ok


# -- preparing the input ------------------------------------------------------------


class _BmPlan:
    """The copied call arguments, the batch tensors in them, and the batch size."""

    def __init__(self, call_args: CallArgs, floats: list[torch.Tensor], integers: list[torch.Tensor], batch_size: int) -> None:
        self.call_args = call_args
        self.floats = floats
        self.integers = integers
        self.batch_size = batch_size


def _bm_fail(message: str) -> BatchGradientVerificationError:
    return BatchGradientVerificationError(f"{_BM_CHECK_NAME}: {message}")


def _bm_shapes(tensors: list[torch.Tensor]) -> str:
    return ", ".join(str(tuple(t.shape)) for t in tensors)


def _bm_prepare(model: nn.Module, input_array: Any, input_mapping: Any, batch_dim: int) -> _BmPlan:
    if isinstance(batch_dim, bool) or not isinstance(batch_dim, int) or batch_dim < 0:
        raise _bm_fail(
            f"batch_dim={batch_dim!r} is out of range: use a non-negative dimension index "
            "(0 for (B, ...) data, 1 for (T, B, ...) data)"
        )
    resolved = resolve_input(model, input_array, _BM_CHECK_NAME, error=BatchGradientVerificationError)
    source = input_array if input_array is not None else getattr(model, "example_input_array", None)
    device = model_device(model)
    # The check works on copies: the caller's tensors (and their requires_grad) are never touched.
    if isinstance(source, CallArgs):
        copied = copy_to_device(resolved, device)
        view = _bm_call_view(copied)
    else:
        view = copy_to_device(source, device)
        copied = CallArgs.from_input_array(view)
    tensors = copied.tensors()
    if input_mapping is None or input_mapping is default_input_mapping:
        selected = _bm_default_batch_tensors(tensors, batch_dim)
    else:
        selected = _bm_mapped_batch_tensors(input_mapping(view), tensors, batch_dim)
    batch_size = selected[0].shape[batch_dim]
    if batch_size < 2:
        raise _bm_fail(
            f"needs at least 2 samples to find mixing, but the batch size is {batch_size} "
            f"(input shapes {_bm_shapes(selected)}, batch_dim={batch_dim}); pass a batch of 2 or more"
        )
    floats = [t for t in selected if _bm_is_differentiable(t)]
    integers = [t for t in selected if not _bm_is_differentiable(t)]
    for tensor in floats:
        tensor.requires_grad_(True)
    return _BmPlan(copied, floats, integers, batch_size)


def _bm_call_view(call_args: CallArgs) -> Any:
    """What an input mapping sees for captured call arguments: the ``input_array`` they came from."""
    if not call_args.kwargs:
        return call_args.args[0] if len(call_args.args) == 1 else call_args.args
    if not call_args.args:
        return call_args.kwargs
    return (call_args.args, call_args.kwargs)


def _bm_default_batch_tensors(tensors: list[torch.Tensor], batch_dim: int) -> list[torch.Tensor]:
    candidates = [t for t in tensors if t.ndim > batch_dim]
    if not candidates:
        raise _bm_fail(
            f"batch_dim={batch_dim} is out of range for every input tensor (shapes {_bm_shapes(tensors)})"
        )
    selected = default_input_mapping(candidates, batch_dim)
    batch_size = selected[0].shape[batch_dim]
    for tensor in candidates:
        # Only a clear second batch of the same kind is a mistake: a tensor with the dtype, rank
        # and every non-batch size of a batch tensor but another batch size ((5, 3) next to
        # (4, 3)).  Anything else (a (T, T) mask next to (B, T) ids, a (2, 2) mask, an (L, B, H)
        # state) is left alone: it is not differentiated and reaches the model unchanged.
        kind = [t for t in selected if _bm_same_kind(tensor, t, batch_dim)]
        if tensor.shape[batch_dim] != batch_size and kind:
            raise _bm_fail(
                f"the input tensors' batch sizes disagree along batch_dim={batch_dim}: {tuple(kind[0].shape)} "
                f"has {batch_size} samples, {tuple(tensor.shape)} has {tensor.shape[batch_dim]}; pass "
                "input_mapping=... to select the batch tensors if the second is not one"
            )
    return selected


def _bm_same_kind(tensor: torch.Tensor, batch: torch.Tensor, batch_dim: int) -> bool:
    # A square tensor whose other sizes match the batch tensor's (a (T, T) mask) is not a batch.
    others = tensor.shape[:batch_dim] + tensor.shape[batch_dim + 1 :]
    return (
        tensor.dtype == batch.dtype
        and tensor.ndim == batch.ndim
        and others == batch.shape[:batch_dim] + batch.shape[batch_dim + 1 :]
        and tensor.shape[batch_dim] not in others
    )


def _bm_mapped_batch_tensors(mapped: Any, tensors: list[torch.Tensor], batch_dim: int) -> list[torch.Tensor]:
    selected = list(iter_tensors(mapped))
    if not selected:
        raise _bm_fail(f"input_mapping returned no tensor (got {type(mapped).__name__})")
    known = {id(t) for t in tensors}
    for tensor in selected:
        if id(tensor) not in known:
            raise _bm_fail(
                "input_mapping must return tensors taken from the input it is given (not new tensors, "
                f"and not tensors inside objects other than tuples, lists, dicts and dataclasses); got {tuple(tensor.shape)}"
            )
        if tensor.ndim <= batch_dim:
            raise _bm_fail(f"batch_dim={batch_dim} is out of range for the input tensor of shape {tuple(tensor.shape)}")
    sizes = {t.shape[batch_dim] for t in selected}
    if len(sizes) > 1:
        raise _bm_fail(
            f"the input tensors' batch sizes disagree along batch_dim={batch_dim}: shapes {_bm_shapes(selected)}"
        )
    return selected


# -- model state for the check --------------------------------------------------------


_BM_PLAIN_BATCHNORM_FORWARDS = (nn.modules.batchnorm._BatchNorm.forward, nn.SyncBatchNorm.forward)


@contextlib.contextmanager
def _bm_batchnorm_as_eval(model: nn.Module) -> Iterator[list[tuple[str, nn.Module]]]:
    """Treat BatchNorm/SyncBatchNorm modules that use batch statistics as in eval mode; yield them.

    "As in eval mode" with this batch's statistics as constants: the activations keep their
    training-mode scale (fresh running statistics would shrink the gradients into slow
    denormals) and no gradient flows through the statistics.  A module with the stock
    ``forward`` becomes a per-channel ``addcmul`` for the check, whose backward is one multiply;
    a subclass with its own ``forward`` runs it in eval mode with the batch's statistics
    swapped in as running statistics.  Everything is put back on exit.
    """
    treated, patched, swapped = [], [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        if module.training or module.running_mean is None or module.running_var is None:
            treated.append((name, module))
            module.training = False
            if type(module).forward in _BM_PLAIN_BATCHNORM_FORWARDS:
                patched.append((module, module.__dict__.get("forward")))
                module.forward = _bm_affine_batchnorm(module)
            else:
                swapped.append((name, module))
    try:
        with forward_hooks(swapped, hook=_bm_restore_statistics, pre_hook=_bm_swap_in_statistics):
            yield treated
    finally:
        for module, previous in patched:
            if previous is None:
                del module.forward
            else:
                module.forward = previous


def _bm_batch_statistics(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 1/sqrt(var + eps) per channel of ``x``, as float tensors, without autograd."""
    with torch.no_grad():
        try:  # the fused kernel: several times faster than var_mean on CPU
            _, mean, invstd = torch.native_batch_norm(x.detach(), None, None, None, None, True, 0.0, module.eps)
        except RuntimeError:
            dims = [d for d in range(x.ndim) if d != 1]
            var, mean = torch.var_mean(x.detach().float(), dim=dims, unbiased=False)
            invstd = torch.rsqrt(var + module.eps)
    return mean.float(), invstd.float()


def _bm_affine_batchnorm(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(input: torch.Tensor) -> torch.Tensor:
        module._check_input_dim(input)
        mean, invstd = _bm_batch_statistics(module, input)
        scale = invstd if module.weight is None else invstd * module.weight.detach().float()
        shift = -mean * scale
        if module.bias is not None:
            shift = shift + module.bias.detach().float()
        shape = [1, -1] + [1] * (input.ndim - 2)
        return torch.addcmul(shift.to(input.dtype).view(shape), input, scale.to(input.dtype).view(shape))

    return forward


def _bm_swap_in_statistics(name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
    x = args[0] if args else next(iter(kwargs.values()))
    mean, invstd = _bm_batch_statistics(module, x)
    var = (invstd.double().pow(-2) - module.eps).clamp_min(0.0)
    saved = (module._buffers.get("running_mean"), module._buffers.get("running_var"))
    dtype = saved[0].dtype if saved[0] is not None else x.dtype
    module.__dict__["_bm_saved_statistics"] = saved
    module._buffers["running_mean"] = mean.to(dtype)
    module._buffers["running_var"] = var.to(dtype)


def _bm_restore_statistics(name: str, module: nn.Module, args: tuple, output: Any) -> None:
    saved = module.__dict__.pop("_bm_saved_statistics", None)
    if saved is not None:
        module._buffers["running_mean"], module._buffers["running_var"] = saved


# -- the forward pass ----------------------------------------------------------------


class _BmTrace:
    """One forward pass: the output matrix, the gradient leaves and (when recorded) the module calls."""

    def __init__(self) -> None:
        self.matrix: torch.Tensor | None = None
        self.leaves: list[torch.Tensor] = []
        self.axes: list[int | None] = []
        # Per leaf: None (row r is input sample r), or the owner samples of each element (see _bm_root_provenance).
        self.maps: list[torch.Tensor | None] = []
        self.sources: list[str] = []
        self.nan_cache: dict[str, Any] = {}
        self.calls: list[tuple[str, nn.Module, list[torch.Tensor], list[torch.Tensor]]] = []


def _bm_forward(
    model: nn.Module,
    plan: _BmPlan,
    output_mapping: Any,
    batch_dim: int,
    record: bool,
) -> _BmTrace:
    trace = _BmTrace()
    size = plan.batch_size
    # The model gets clones of the batch tensors, so that a forward that edits its input in
    # place still runs and every forward pass (and replay) starts from the same values.
    clones = {id(t): t.clone() for t in plan.floats + plan.integers}
    integers = [clones[id(t)] for t in plan.integers]
    follower = _BmIntegerFollower(integers, size, batch_dim) if integers else None
    pending: dict[int, list[tuple[int, list[torch.Tensor]]]] = {}

    def roots_so_far() -> int:
        return len(follower.roots) if follower is not None else 0

    def before(name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = [t for t in iter_tensors((args, kwargs)) if t.requires_grad]
        pending.setdefault(id(module), []).append((roots_so_far(), inputs))

    def after(name: str, module: nn.Module, args: tuple, output: Any) -> None:
        start, inputs = pending[id(module)].pop()
        created = [leaf for leaf, _, _ in follower.roots[start:]] if follower is not None else []
        outputs = [t for t in iter_tensors(output) if t.requires_grad]
        trace.calls.append((name, module, inputs + created, outputs))

    call_args = plan.call_args.map(lambda t: clones.get(id(t), t))
    recording = forward_hooks(model.named_modules(), hook=after, pre_hook=before) if record else contextlib.nullcontext()
    with recording:
        with follower if follower is not None else contextlib.nullcontext():
            output = call_model(model, call_args, _BM_CHECK_NAME, error=BatchGradientVerificationError)
    trace.matrix = _bm_output_matrix(output, output_mapping, size, batch_dim)
    for index, leaf in enumerate(plan.floats):
        trace.leaves.append(leaf)
        trace.axes.append(batch_dim)
        trace.maps.append(None)
        trace.sources.append(f"input tensor {index} {tuple(leaf.shape)}")
    roots = follower.roots if follower is not None else []
    maps = _bm_root_provenance(follower, list(zip(integers, plan.integers)), size, batch_dim) if roots else []
    for index, (leaf, axis, op) in enumerate(roots):
        row_map = maps[index] if maps is not None else None
        if axis is None and row_map is None:
            continue  # no batch axis and no known provenance: nothing to attribute its gradient to
        trace.leaves.append(leaf)
        trace.axes.append(axis)
        trace.maps.append(row_map)
        source = f"{op} output {tuple(leaf.shape)} computed from integer inputs"
        if _bm_map_mixes(row_map, leaf, axis, size, batch_dim):
            source += " (its rows mix integer inputs of other samples)"
        elif row_map is not None:
            source += " (each element traced back to the input samples it comes from)"
        trace.sources.append(source)
    if not trace.leaves:
        raise _bm_fail(
            "found no floating tensor with the batch size to take gradients at: the integer inputs "
            f"(shapes {_bm_shapes(plan.integers)}) never became floating tensors with {size} samples "
            f"along batch_dim={batch_dim}"
        )
    return trace


def _bm_output_matrix(output: Any, output_mapping: Any, size: int, batch_dim: int) -> torch.Tensor:
    if output_mapping is None or output_mapping is default_output_mapping:
        try:
            matrix = _bm_output_rows(output, batch_dim, size)
        except ValueError as exc:
            raise _bm_fail(f"the output does not match the input's batch size {size}: {exc}") from None
    else:
        mapped = output_mapping(output)
        if not isinstance(mapped, torch.Tensor):
            raise _bm_fail(f"output_mapping must return a tensor, got {type(mapped).__name__}")
        axis = batch_dim if mapped.ndim > batch_dim and mapped.shape[batch_dim] == size else None
        if axis is None and mapped.ndim > 0 and mapped.shape[0] == size:
            axis = 0
        if axis is None:
            raise _bm_fail(
                f"output_mapping returned shape {tuple(mapped.shape)}, which does not have the batch size "
                f"{size} along batch_dim={batch_dim}"
            )
        matrix = _bm_flatten_rows(mapped, axis)
    if not matrix.requires_grad:
        raise _bm_fail(
            "the output is not differentiable with respect to the input: no output tensor with the batch "
            "size requires grad (is the forward pass run under torch.no_grad(), detached, or integer-valued?)"
        )
    return matrix


# -- the backward passes --------------------------------------------------------------


def _bm_generator(device: torch.device) -> torch.Generator:
    # A private generator: the global RNG is never consumed, and the weights are reproducible.
    generator = torch.Generator(device=device)
    generator.manual_seed(_BM_SEED)
    return generator


def _bm_weights(like: torch.Tensor, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    # Positive weights in [scale, 2 * scale): a sum of them cannot cancel exactly by chance.
    weights = torch.rand(like.shape, generator=generator, device=like.device, dtype=torch.float32)
    return weights.add_(1.0).mul_(scale).to(like.dtype)


def _bm_weight_scale(tensors: list[torch.Tensor]) -> float:
    """Loss-scaling for float16 leaves: a leak scaled by 1e-7 and averaged over the batch
    would otherwise underflow to an exact zero gradient in float16 (bfloat16 has float32's range)."""
    return _BM_HALF_SCALE if any(t.dtype == torch.float16 for t in tensors) else 1.0



def _bm_rows_with_gradient(
    grads: tuple,
    axes: list[int | None],
    size: int,
    device: torch.device,
    maps: list[torch.Tensor | None] | None = None,
    ignore: list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """``(B,)`` bool: which input samples received a nonzero (or NaN) gradient in any leaf.

    ``maps[i]`` (when given and not ``None``) says which input samples each element of leaf i
    comes from (an owner per element, or a ``(numel, B)`` table); ``ignore[i]`` masks elements whose gradient is NaN whatever the seed.
    """
    rows = torch.zeros(size, dtype=torch.bool, device=device)
    for index, (grad, axis) in enumerate(zip(grads, axes)):
        row_map = maps[index] if maps is not None else None
        if grad is None or grad.numel() == 0 or (axis is None and row_map is None):
            continue
        nonzero = grad != 0
        if ignore is not None and ignore[index] is not None:
            nonzero &= ~ignore[index]
        if row_map is None:
            others = tuple(d for d in range(grad.ndim) if d != axis)
            rows |= nonzero.any(dim=others) if others else nonzero
        elif row_map.dtype == torch.long:  # the one owner sample of each element (-1: none)
            owners = row_map[nonzero.reshape(-1)]
            rows[owners[owners >= 0].to(device)] = True
        else:  # (numel, B): the owner samples of each element
            rows |= (nonzero.reshape(-1, 1) & row_map).any(dim=0).to(device)
    return rows


def _bm_seeded_rows(
    outputs: list[torch.Tensor],
    grad_outputs: list[torch.Tensor],
    leaves: list[torch.Tensor],
    axes: list[int | None],
    maps: list[torch.Tensor | None] | None,
    seed: torch.Tensor,
    cache: dict[str, Any],
) -> torch.Tensor:
    """``(B,)`` bool: the input samples outside ``seed`` that received gradient from the seeded outputs.

    A gradient that is NaN even when every seed weight is zero (``0 * inf`` in the backward of
    ``sqrt`` at 0, a NaN sample) says nothing about dependencies: such elements are found with
    one extra backward pass, only when NaNs would otherwise raise an alarm, and ignored.
    """
    size = seed.shape[0]
    grads = torch.autograd.grad(outputs, leaves, grad_outputs, retain_graph=True, allow_unused=True)
    rows = _bm_rows_with_gradient(grads, axes, size, seed.device, maps, cache.get("nan"))
    if bool((rows & ~seed).any()) and "nan" not in cache and any(g is not None and bool(g.isnan().any()) for g in grads):
        zeros = [torch.zeros_like(g) for g in grad_outputs]
        baseline = torch.autograd.grad(outputs, leaves, zeros, retain_graph=True, allow_unused=True)
        cache["nan"] = [None if g is None else g.isnan() for g in baseline]
        rows = _bm_rows_with_gradient(grads, axes, size, seed.device, maps, cache["nan"])
    return rows & ~seed


def _bm_passes(trace: _BmTrace, seeds: list[torch.Tensor]) -> list[torch.Tensor]:
    """For each seed mask (B,) bool: the input samples outside the mask that received gradient."""
    matrix = trace.matrix
    generator = _bm_generator(matrix.device)
    weights = _bm_weights(matrix, generator, _bm_weight_scale(trace.leaves))
    found = []
    for seed in seeds:
        seed = seed.to(matrix.device)
        grad_output = weights * seed.to(weights.dtype).unsqueeze(1)
        # The graph is kept for every pass (a NaN baseline may need it); it is freed with the trace.
        found.append(
            _bm_seeded_rows([matrix], [grad_output], trace.leaves, trace.axes, trace.maps, seed, trace.nan_cache)
        )
    return found


def _bm_dependencies(trace: _BmTrace, size: int, sample_idx: int | None) -> tuple[SampleDependency, ...]:
    outputs = list(range(size)) if sample_idx is None else [sample_idx]
    eye = torch.eye(size, dtype=torch.bool)
    rows = torch.stack(_bm_passes(trace, [eye[i] for i in outputs])).cpu()
    depends = torch.zeros(size, size, dtype=torch.bool)
    depends[outputs] = rows
    pairs = depends.nonzero().tolist()
    if sample_idx is not None:
        return tuple(SampleDependency(i, j, None) for i, j in pairs)
    return tuple(SampleDependency(i, j, bool(depends[j, i])) for i, j in pairs)


def _bm_first_mixing_module(trace: _BmTrace, size: int, batch_dim: int, codes: torch.Tensor) -> MixingModule | None:
    """The first module call (in the order calls finish) whose own output rows depend on other rows of its input."""
    for name, module, inputs, outputs in trace.calls:
        ins = [(t, _bm_batch_axis(t, size, batch_dim)) for t in inputs]
        ins = [(t, axis) for t, axis in ins if axis is not None]
        outs = [(t, _bm_batch_axis(t, size, batch_dim)) for t in outputs]
        outs = [(t, axis) for t, axis in outs if axis is not None and _bm_is_differentiable(t)]
        if not ins or not outs:
            continue
        generator = _bm_generator(outs[0][0].device)
        scale = _bm_weight_scale([t for t, _ in ins])
        cache: dict[str, Any] = {}
        for column in range(codes.shape[1]):
            seed = codes[:, column].to(outs[0][0].device)
            grad_outputs = [_bm_weights(t, generator, scale) * _bm_along(seed, t, axis) for t, axis in outs]
            try:
                rows = _bm_seeded_rows(
                    [t for t, _ in outs], grad_outputs, [t for t, _ in ins], [axis for _, axis in ins], None, seed, cache
                )
            except RuntimeError:
                break  # this call's graph cannot be replayed on its own (e.g. edited in place); skip it
            if bool(rows.any()):
                shapes_in = _bm_shapes([t for t, _ in ins])
                shapes_out = _bm_shapes([t for t, _ in outs])
                detail = (
                    f"its output rows depend on other rows of its input (input {shapes_in} -> output "
                    f"{shapes_out}, batch along dimension {ins[0][1]} -> {outs[0][1]})."
                )
                return MixingModule(name, type(module).__name__, detail)
    return None


def _bm_along(seed: torch.Tensor, tensor: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * tensor.ndim
    shape[axis] = -1
    return seed.to(tensor.dtype).reshape(shape)


# -- the whole check -------------------------------------------------------------------


def _bm_run(
    model: nn.Module, input_array: Any, input_mapping: Any, output_mapping: Any, sample_idx: int | None, batch_dim: int
) -> BatchMixingReport:
    # Lazy modules are initialized on a copy, so the caller's model stays lazy.
    model = materializable_copy(model, _BM_CHECK_NAME, error=BatchGradientVerificationError)
    with preserved_state(model), torch.enable_grad():
        plan = _bm_prepare(model, input_array, input_mapping, batch_dim)
        size = plan.batch_size
        if sample_idx is not None:
            if isinstance(sample_idx, bool) or not isinstance(sample_idx, int) or not -size <= sample_idx < size:
                raise _bm_fail(f"sample_idx={sample_idx!r} is out of range for batch size {size}")
            sample_idx %= size
        for parameter in model.parameters():
            # Gradients w.r.t. the inputs only; restored on exit.  A lazy parameter (on our copy)
            # takes no flag before it is initialized: it merely costs a weight gradient.
            if not isinstance(parameter, nn.parameter.UninitializedParameter):
                parameter.requires_grad_(False)
        with _bm_batchnorm_as_eval(model) as batchnorms:
            ok, dependencies, first, passes, sources = _bm_decide(model, plan, output_mapping, sample_idx, batch_dim)
        return BatchMixingReport(
            ok=ok,
            batch_size=size,
            batch_dim=batch_dim,
            sample_idx=sample_idx,
            backward_passes=passes,
            dependencies=dependencies,
            first_mixing_module=first,
            batchnorm_as_eval=tuple(MixingModule(name, type(module).__name__) for name, module in batchnorms),
            gradient_sources=sources,
        )


def _bm_decide(model: nn.Module, plan: _BmPlan, output_mapping: Any, sample_idx: int | None, batch_dim: int) -> tuple:
    """The k passes (or the one pass for ``sample_idx``); on mixing, the pairs and the first mixing module."""
    size = plan.batch_size
    rng = capture_rng_state()
    trace = _bm_forward(model, plan, output_mapping, batch_dim, record=False)
    codes = _bm_codes(size)
    if sample_idx is None:
        seeds = [codes[:, column] for column in range(codes.shape[1])]
    else:
        seeds = [torch.arange(size) == sample_idx]
    found = _bm_passes(trace, seeds)
    mixing = bool(torch.stack(found).any())
    sources = tuple(trace.sources)
    del trace
    if not mixing:
        return True, (), None, len(seeds), sources
    # Replay the same forward pass (same RNG, so the same dropout masks), recording module calls.
    restore_rng_state(rng)
    trace = _bm_forward(model, plan, output_mapping, batch_dim, record=True)
    dependencies = _bm_dependencies(trace, size, sample_idx)
    first = _bm_first_mixing_module(trace, size, batch_dim, codes)
    return False, dependencies, first, len(seeds), sources
