"""Following every bias through one forward pass, tensor by tensor.

The tracer runs the model once under a ``TorchFunctionMode``: it sees each torch
call at the level the model's code makes it (``F.batch_norm``, not the kernels
below it), while forward hooks keep a stack of the running modules so that a
call is attributed to the innermost one.

It keeps *facts* about tensors, keyed by object identity: "this tensor is
something plus the bias held by parameter P, and that bias varies only along
these axes of this tensor".  A fact is born where a parameter-derived tensor is
added to an activation (``F.conv2d``/``F.linear`` with a bias, or a plain
``x + self.bias``).  It follows the tensor through the operations that keep an
added per-channel constant an added constant with known axes (reshapes and
permutes, flips and rolls, pooling, upsampling, padding, dropout taken as
identity, sums with other tensors, scaling, concatenation) and ends at every
other use.  Each use is recorded against the bias parameter: a normalization whose mean reduction
covers none of the fact's axes *cancels* it; any other use (a non-linearity, a
matmul, being returned, a normalization that averages along the bias) *keeps*
it.  A bias is redundant when it was cancelled at least once and never kept.
Only values matter here, so the pass runs without autograd.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from verify_common import module_label

# What a torch call does to a fact on one of its tensor inputs.
_BN_STOP = "stop"  # any other use: the bias is needed (the default)
_BN_NEUTRAL = "neutral"  # reads only metadata, or builds a new tensor of the same shape
_BN_IDENTITY = "identity"  # same values, same layout
_BN_DROPOUT = "dropout"  # taken as identity: the check is deterministic
_BN_PERMUTE = "permute"
_BN_RESHAPE = "reshape"
_BN_BROADCAST = "broadcast"
_BN_SAME_RANK = "same_rank"  # slices along axes, pooling, upsampling: axes keep their index
_BN_SELECT = "select"
_BN_ROLL = "roll"  # along given dims: axes keep their index; without dims it shifts the flattened tensor
_BN_GETITEM = "getitem"
_BN_AVG_POOL = "avg_pool"
_BN_PAD = "pad"
_BN_CAT = "cat"
_BN_STACK = "stack"
_BN_ADD = "add"
_BN_MUL = "mul"
_BN_NORM = "norm"
_BN_BIASED = "biased"

_BN_OP_KINDS: dict[str, str] = {}
for _bn_kind, _bn_names in {
    _BN_NEUTRAL: (
        "Tensor.new_zeros Tensor.new_ones Tensor.new_empty Tensor.new_full Tensor.new_tensor torch.zeros_like "
        "torch.ones_like torch.empty_like torch.full_like torch.rand_like torch.randn_like torch.randint_like "
        "Tensor.grad Tensor.__repr__ Tensor.__format__"
    ),
    _BN_IDENTITY: (
        "Tensor.contiguous Tensor.clone torch.clone Tensor.detach torch.detach Tensor.detach_ Tensor.to "
        "Tensor.float Tensor.double Tensor.half Tensor.bfloat16 Tensor.type Tensor.type_as Tensor.cpu Tensor.cuda "
        "Tensor.data Tensor.real Tensor.requires_grad_ Tensor.alias torch.alias_copy Tensor.positive torch.positive"
    ),
    _BN_DROPOUT: (
        "F.dropout F.dropout1d F.dropout2d F.dropout3d F.alpha_dropout F.feature_alpha_dropout torch.dropout "
        "torch.dropout_ torch.alpha_dropout torch.alpha_dropout_ torch.feature_dropout torch.feature_dropout_ "
        "torch.feature_alpha_dropout torch.feature_alpha_dropout_"
    ),
    _BN_PERMUTE: (
        "Tensor.permute torch.permute Tensor.transpose torch.transpose Tensor.transpose_ Tensor.swapaxes "
        "torch.swapaxes Tensor.swapdims torch.swapdims Tensor.t torch.t Tensor.t_ Tensor.T Tensor.mT Tensor.H "
        "Tensor.mH Tensor.movedim torch.movedim Tensor.moveaxis torch.moveaxis"
    ),
    _BN_RESHAPE: (
        "Tensor.view Tensor.view_as Tensor.reshape torch.reshape Tensor.reshape_as Tensor.flatten torch.flatten "
        "Tensor.unflatten torch.unflatten Tensor.squeeze torch.squeeze Tensor.squeeze_ Tensor.unsqueeze "
        "torch.unsqueeze Tensor.unsqueeze_ Tensor.ravel torch.ravel"
    ),
    _BN_BROADCAST: (
        "Tensor.expand Tensor.expand_as torch.broadcast_to Tensor.broadcast_to Tensor.repeat torch.tile Tensor.tile"
    ),
    _BN_SAME_RANK: (
        "Tensor.narrow torch.narrow Tensor.chunk torch.chunk Tensor.split torch.split Tensor.tensor_split "
        "torch.tensor_split Tensor.split_with_sizes torch.split_with_sizes Tensor.unsafe_split "
        "F.max_pool1d F.max_pool2d F.max_pool3d F.max_pool1d_with_indices F.max_pool2d_with_indices "
        "F.max_pool3d_with_indices torch.max_pool1d torch.max_pool2d torch.max_pool3d F.adaptive_max_pool1d "
        "F.adaptive_max_pool2d F.adaptive_max_pool3d F.adaptive_max_pool1d_with_indices "
        "F.adaptive_max_pool2d_with_indices F.adaptive_max_pool3d_with_indices torch.adaptive_avg_pool1d "
        "F.adaptive_avg_pool1d F.adaptive_avg_pool2d F.adaptive_avg_pool3d F.interpolate F.upsample "
        "F.upsample_nearest F.upsample_bilinear F.fractional_max_pool2d F.fractional_max_pool3d "
        "F.fractional_max_pool2d_with_indices F.fractional_max_pool3d_with_indices "
        "Tensor.flip torch.flip Tensor.fliplr torch.fliplr Tensor.flipud torch.flipud torch.channel_shuffle "
        "F.channel_shuffle torch.native_channel_shuffle"
    ),
    _BN_ROLL: "Tensor.roll torch.roll",
    _BN_SELECT: "Tensor.select torch.select Tensor.unbind torch.unbind",
    _BN_GETITEM: "Tensor.__getitem__",
    _BN_AVG_POOL: "torch.avg_pool1d F.avg_pool1d F.avg_pool2d F.avg_pool3d",
    _BN_PAD: "F.pad torch.constant_pad_nd",
    _BN_CAT: "torch.cat torch.concat torch.concatenate",
    _BN_STACK: "torch.stack",
    _BN_ADD: (
        "Tensor.add torch.add Tensor.add_ Tensor.__iadd__ Tensor.__radd__ Tensor.sub torch.sub Tensor.sub_ "
        "Tensor.__isub__ Tensor.__rsub__ torch.rsub Tensor.subtract torch.subtract Tensor.subtract_"
    ),
    _BN_MUL: (
        "Tensor.mul torch.mul Tensor.mul_ Tensor.__imul__ Tensor.multiply torch.multiply Tensor.div torch.div "
        "Tensor.div_ Tensor.__itruediv__ Tensor.true_divide torch.true_divide Tensor.divide torch.divide "
        "Tensor.neg torch.neg Tensor.neg_ Tensor.negative torch.negative"
    ),
    _BN_NORM: (
        "F.batch_norm torch.batch_norm F.instance_norm torch.instance_norm F.group_norm torch.group_norm "
        "F.layer_norm torch.layer_norm"
    ),
}.items():
    for _bn_name in _bn_names.split():
        _BN_OP_KINDS[_bn_name] = _bn_kind

# Biased calls: where the bias argument sits, and along which output axes it varies.
_BN_BIASED_CALLS: dict[str, tuple[int, str, str]] = {
    "torch.conv1d": (2, "bias", "conv1"),
    "torch.conv2d": (2, "bias", "conv2"),
    "torch.conv3d": (2, "bias", "conv3"),
    "torch.conv_transpose1d": (2, "bias", "conv1"),
    "torch.conv_transpose2d": (2, "bias", "conv2"),
    "torch.conv_transpose3d": (2, "bias", "conv3"),
    "F.linear": (2, "bias", "last"),
    "torch.bilinear": (3, "bias", "last"),
    "F.multi_head_attention_forward": (12, "out_proj_bias", "last"),
    "torch.addmm": (0, "input", "broadcast"),
    "Tensor.addmm": (0, "self", "broadcast"),
    "torch.baddbmm": (0, "input", "broadcast"),
    "Tensor.baddbmm": (0, "self", "broadcast"),
}
for _bn_name in _BN_BIASED_CALLS:
    _BN_OP_KINDS[_bn_name] = _BN_BIASED

# Calls with a tensor result that only read values: any use of a fact's tensor there keeps the bias.
_BN_VALUE_READERS = frozenset(
    "Tensor.item Tensor.tolist Tensor.numpy Tensor.__bool__ Tensor.__float__ Tensor.__int__ Tensor.__index__ "
    "torch.equal Tensor.equal torch.allclose Tensor.allclose torch.is_nonzero".split()
)
# Dropout inside attention is switched off so that the pass is deterministic: (position, keyword).
_BN_ATTENTION_DROPOUT = {"F.scaled_dot_product_attention": (4, "dropout_p"), "F.multi_head_attention_forward": (10, "dropout_p")}
_BN_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)
_BN_SPATIAL_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
_BN_NORM_MODULE_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)
_BN_NAME_CACHE: dict[Any, str] = {}

Fact = tuple[int, frozenset]  # (source key, axes of the tensor along which the bias varies)


@dataclasses.dataclass(frozen=True)
class Cancellation:
    """One normalization call that cancelled a fact: where, over which axes."""

    order: int
    norm_name: str
    norm_type: str
    call: str
    functional: bool
    shape: tuple[int, ...]
    mean_axes: tuple[int, ...]
    bias_axes: tuple[int, ...]
    axis_labels: tuple[str, ...]


@dataclasses.dataclass
class BiasSource:
    """One bias parameter seen being added to an activation, and every use of the result."""

    key: int
    name: str
    module_type: str
    numel: int
    frozen: bool
    order: int
    kept_because: str | None = None
    cancellations: list[Cancellation] = dataclasses.field(default_factory=list)

    @property
    def redundant(self) -> bool:
        return self.kept_because is None and bool(self.cancellations)


def op_name(func: Any) -> str:
    """A stable short name for a torch callable: ``F.batch_norm``, ``torch.cat``, ``Tensor.view``.

    >>> import torch
    >>> op_name(torch.nn.functional.layer_norm), op_name(torch.cat), op_name(torch.Tensor.view)
    ('F.layer_norm', 'torch.cat', 'Tensor.view')
    """
    try:
        return _BN_NAME_CACHE[func]
    except (KeyError, TypeError):
        pass
    name = getattr(func, "__name__", "") or ""
    qualname = getattr(func, "__qualname__", "") or ""
    module = getattr(func, "__module__", "") or ""
    if name == "__get__":  # a tensor property: x.T, x.shape, x.data
        result = "Tensor." + getattr(getattr(func, "__self__", None), "__name__", "?")
    elif qualname.startswith(("TensorBase.", "Tensor.")):
        result = "Tensor." + name
    elif module.startswith("torch.nn.functional") or module == "torch._C._nn":
        result = "F." + name
    else:
        result = "torch." + name
    try:
        _BN_NAME_CACHE[func] = result
    except TypeError:
        pass
    return result


def axis_labels(call: str, ndim: int) -> tuple[str, ...]:
    """Names for the axes of a normalization's input: ``(N, C, H, W)`` where the layout is known.

    >>> axis_labels("F.batch_norm", 4), axis_labels("F.layer_norm", 3)
    (('N', 'C', 'H', 'W'), ('dim 0', 'dim 1', 'dim 2'))
    """
    if not call.endswith("layer_norm") and 2 <= ndim <= 5:
        return ("N", "C", *_BN_SPATIAL_NAMES.get(ndim - 2, ()))
    return tuple(f"dim {index}" for index in range(ndim))


def _bn_arg(args: tuple, kwargs: dict, index: int, keyword: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(keyword, default)


def _bn_clip(shape: torch.Size, axes: Any) -> frozenset:
    # A bias cannot vary along an axis of length 1.
    return frozenset(axis for axis in axes if 0 <= axis < len(shape) and shape[axis] != 1)


def _bn_right_aligned(source: torch.Tensor, out: torch.Tensor, axes: Any) -> set:
    offset = out.dim() - source.dim()
    return {axis + offset for axis in axes}


def _bn_varying(tensor: Any, out: torch.Tensor) -> set:
    """Axes of ``out`` along which ``tensor`` (broadcast to it) may take different values."""
    if not isinstance(tensor, torch.Tensor):
        return set()
    return _bn_right_aligned(tensor, out, (axis for axis in range(tensor.dim()) if tensor.shape[axis] != 1))


def _bn_reshape_axes(before: torch.Size, after: torch.Size, axes: Any) -> set:
    """Map axes through a reshape: an output axis varies if it shares a merged/split group with a varying one."""
    if 0 in before or 0 in after:
        return set(range(len(after)))
    src = [axis for axis in range(len(before)) if before[axis] != 1]
    dst = [axis for axis in range(len(after)) if after[axis] != 1]
    result: set = set()
    i = j = 0
    while i < len(src) and j < len(dst):
        group_in, group_out = [src[i]], [dst[j]]
        size_in, size_out = before[src[i]], after[dst[j]]
        i, j = i + 1, j + 1
        while size_in != size_out:
            if size_in < size_out and i < len(src):
                group_in.append(src[i])
                size_in *= before[src[i]]
                i += 1
            elif size_out < size_in and j < len(dst):
                group_out.append(dst[j])
                size_out *= after[dst[j]]
                j += 1
            else:  # shapes that do not line up: assume the worst
                return set(range(len(after)))
        if any(axis in axes for axis in group_in):
            result.update(group_out)
    return result


def _bn_getitem_axes(tensor: torch.Tensor, index: Any, axes: Any) -> set | None:
    """Map axes through basic indexing (ints, slices, None, ...); ``None`` for anything else."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if item is not None and item is not Ellipsis and type(item) is not slice:
            if isinstance(item, bool) or not isinstance(item, int):
                return None
    consumed = sum(1 for item in items if item is not None and item is not Ellipsis)
    expanded: list = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (tensor.dim() - consumed))
        else:
            expanded.append(item)
    expanded.extend([slice(None)] * (tensor.dim() - sum(1 for item in expanded if item is not None)))
    mapping = {}
    source = target = 0
    for item in expanded:
        if item is None:
            target += 1
        elif isinstance(item, int):
            source += 1
        else:
            mapping[source] = target
            source += 1
            target += 1
    return {mapping[axis] for axis in axes if axis in mapping}


def _bn_dim(value: Any, ndim: int) -> int:
    value = int(value)
    return value + ndim if value < 0 else value


def _bn_outputs(out: Any) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [item for item in out if isinstance(item, torch.Tensor)]
    return []


def is_norm_module(module: nn.Module) -> bool:
    """True for torch's normalization modules, their subclasses and modules named ``*Norm*``.

    >>> import torch
    >>> is_norm_module(torch.nn.GroupNorm(2, 4)), is_norm_module(torch.nn.Linear(2, 2))
    (True, False)
    """
    return isinstance(module, _BN_NORM_MODULE_TYPES) or "norm" in type(module).__name__.lower()


def _bn_owner_name(name: str) -> str:
    # A parametrized tensor lives in "<module>.parametrizations.<attr>.original": report <module>.
    if name.startswith("parametrizations."):
        return ""
    return name.split(".parametrizations.", 1)[0]


class BiasTracer(TorchFunctionMode):
    """Runs under one forward pass and records, per bias parameter, every use of the biased output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.stack: list[tuple[str, nn.Module]] = [("", model)]
        self.owners: dict[int, tuple[str, nn.Module, torch.Tensor]] = {}
        modules = dict(model.named_modules())
        for name, module in modules.items():
            owner = _bn_owner_name(name)
            for param in module._parameters.values():
                if param is not None and id(param) not in self.owners:
                    self.owners[id(param)] = (owner, modules.get(owner, module), param)
        # Parameter-derived tensors (a parameter, a view of it, a parametrization's result): id -> (tensor, key).
        self.derived: dict[int, tuple[torch.Tensor, int]] = {
            key: (param, key) for key, (_, _, param) in self.owners.items()
        }
        self.buffers = {id(buffer) for buffer in model.buffers()}
        # Tensors carrying facts: id -> (tensor, facts).  The tensor is held so that its id stays unique.
        self.facts: dict[int, tuple[torch.Tensor, tuple[Fact, ...]]] = {}
        self.sources: dict[int, BiasSource] = {}
        self.steps = 0
        self.normalization_calls = 0

    # -- module stack (forward hooks) ---------------------------------------------------
    def enter_module(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.stack.append((name, module))

    def exit_module(self, name: str, module: nn.Module, args: tuple, output: Any) -> None:
        if len(self.stack) > 1:
            self.stack.pop()

    def finish(self, tensors: list) -> None:
        """Everything the model returns is a use that keeps its bias."""
        for tensor in tensors:
            if self._live(tensor):
                self._keep([tensor], "returned by the model")

    # -- the mode ----------------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = op_name(func)
        kind = _BN_OP_KINDS.get(name, _BN_STOP)
        if kind == _BN_DROPOUT:
            return args[0] if args else kwargs["input"]
        if name in _BN_ATTENTION_DROPOUT:
            args, kwargs = self._without_dropout(name, args, kwargs)
        self.steps += 1
        tracked, derived_key, activations = self._scan(args, kwargs)
        if kind == _BN_NORM:
            return self._normalization(func, name, args, kwargs, tracked)
        target = args[0] if args else kwargs.get("input", kwargs.get("self"))
        mutated = target if _bn_mutates(name) and isinstance(target, torch.Tensor) else None
        # An in-place reshape changes the tensor's shape under us: map its axes from the shape it had.
        shape_before = tuple(mutated.shape) if mutated is not None else None
        facts_before = self._live(mutated) if mutated is not None else ()
        out = func(*args, **kwargs)
        if derived_key is not None and not activations:
            # Computed from parameters alone (a view of a bias, a parametrization): still a parameter.
            for tensor in _bn_outputs(out):
                self.derived.setdefault(id(tensor), (tensor, derived_key))
        elif kind == _BN_BIASED:
            self._keep(tracked, f"used by {name}")
            self._biased_output(name, args, kwargs, out)
        elif kind == _BN_ADD:
            self._add(args, kwargs, out)
        elif tracked:
            self._propagate(func, name, kind, args, kwargs, out, tracked, shape_before)
        if mutated is not None and kind in (_BN_ADD, _BN_MUL):
            self._guard_aliases(mutated, facts_before, name)
        return out

    def _guard_aliases(self, mutated: torch.Tensor, facts_before: tuple, name: str) -> None:
        # Other views of the same memory keep the facts they had before this in-place change of
        # their values: they no longer describe what those views hold, so every bias involved is kept.
        if set(self._live(mutated)) == set(facts_before):
            return
        pointer = _bn_storage(mutated)
        if not pointer:
            return
        aliases = [
            tensor
            for tensor, _ in list(self.facts.values())
            if tensor is not mutated and _bn_storage(tensor) == pointer and self._live(tensor)
        ]
        if aliases:
            for key, _ in facts_before:
                source = self.sources[key]
                if source.kept_because is None:
                    source.kept_because = f"changed in place by {name} while another view of it was in use"
            self._keep([mutated, *aliases], f"changed in place by {name} while another view of it was in use")

    # -- bookkeeping -------------------------------------------------------------------
    def _scan(self, args: tuple, kwargs: dict) -> tuple[list, int | None, int]:
        tracked = []
        derived_key = None
        activations = 0
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor):
                items: Any = (value,)
            elif isinstance(value, (list, tuple)):
                items = value
            else:
                continue
            for tensor in items:
                if not isinstance(tensor, torch.Tensor):
                    continue
                ident = id(tensor)
                if ident in self.derived:
                    if derived_key is None:
                        derived_key = self.derived[ident][1]
                elif ident in self.buffers:
                    pass
                elif isinstance(tensor, nn.Parameter):
                    # A parameter created during the forward pass (lazy or hand-rolled): owned by the running module.
                    name, module = self.stack[-1]
                    self.owners[ident] = (name, module, tensor)
                    self.derived[ident] = (tensor, ident)
                    if derived_key is None:
                        derived_key = ident
                else:
                    activations += 1
                    if ident in self.facts and self._live(tensor):
                        tracked.append(tensor)
        return tracked, derived_key, activations

    def _live(self, tensor: torch.Tensor) -> tuple[Fact, ...]:
        entry = self.facts.get(id(tensor))
        if entry is None:
            return ()
        facts = tuple(fact for fact in entry[1] if self.sources[fact[0]].kept_because is None)
        if not facts:
            del self.facts[id(tensor)]
        return facts

    def _set(self, tensor: torch.Tensor, facts: list) -> None:
        if facts:
            self.facts[id(tensor)] = (tensor, tuple(facts))
        else:
            self.facts.pop(id(tensor), None)

    def _keep(self, tensors: list, reason: str) -> None:
        where = module_label(self.stack[-1][0])
        for tensor in tensors:
            for key, _ in self._live(tensor):
                source = self.sources[key]
                if source.kept_because is None:
                    source.kept_because = f"{reason} in '{where}'"
            self.facts.pop(id(tensor), None)

    def _source(self, key: int) -> BiasSource:
        source = self.sources.get(key)
        if source is None:
            name, module, param = self.owners[key]
            source = BiasSource(
                key=key,
                name=name,
                module_type=type(module).__name__,
                numel=param.numel(),
                frozen=not param.requires_grad,
                order=self.steps,
            )
            self.sources[key] = source
        return source

    def _without_dropout(self, name: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        index, keyword = _BN_ATTENTION_DROPOUT[name]
        if len(args) > index:
            args = (*args[:index], 0.0, *args[index + 1 :])
        elif keyword in kwargs:
            kwargs = {**kwargs, keyword: 0.0}
        return args, kwargs

    # -- where facts are born ----------------------------------------------------------
    def _biased_output(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        index, keyword, rule = _BN_BIASED_CALLS[name]
        bias = _bn_arg(args, kwargs, index, keyword)
        entry = self.derived.get(id(bias)) if isinstance(bias, torch.Tensor) else None
        if entry is None:
            return
        result = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(result, torch.Tensor):
            return
        if rule.startswith("conv"):
            spatial = int(rule[-1])
            axes = {1 if result.dim() == spatial + 2 else 0}
        elif rule == "last":
            axes = {result.dim() - 1}
        else:
            axes = _bn_varying(bias, result)
        source = self._source(entry[1])
        self._set(result, [(source.key, _bn_clip(result.shape, axes))])

    def _add(self, args: tuple, kwargs: dict, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        operands = [args[0] if args else kwargs.get("input"), args[1] if len(args) > 1 else kwargs.get("other")]
        facts = []
        for operand in operands:
            if isinstance(operand, torch.Tensor):
                for key, axes in self._live(operand):
                    facts.append((key, _bn_clip(out.shape, _bn_right_aligned(operand, out, axes))))
        derived = [op for op in operands if isinstance(op, torch.Tensor) and id(op) in self.derived]
        others = [
            op
            for op in operands
            if isinstance(op, torch.Tensor) and id(op) not in self.derived and id(op) not in self.buffers
        ]
        if derived and others:  # activation + parameter: a bias is born
            source = self._source(self.derived[id(derived[0])][1])
            facts.append((source.key, _bn_clip(out.shape, _bn_varying(derived[0], out))))
        if facts or id(out) in self.facts:
            self._set(out, facts)

    # -- where facts end ---------------------------------------------------------------
    def _normalization(self, func: Any, name: str, args: tuple, kwargs: dict, tracked: list) -> Any:
        self.normalization_calls += 1
        x = _bn_arg(args, kwargs, 0, "input")
        self._keep([tensor for tensor in tracked if tensor is not x], f"passed as a parameter of {name}")
        try:
            out = func(*args, **kwargs)
        except ValueError as exc:
            # Batch statistics of one value per channel (a batch of one in training mode): the
            # decision needs only shapes, so a same-shaped stand-in lets the pass go on.
            if "Expected more than 1" not in str(exc):
                raise
            out = x.clone()
        if not any(tensor is x for tensor in tracked):
            return out
        mean_axes = self._mean_axes(name, args, kwargs, x)
        module_name, module = self.stack[-1]
        if mean_axes is None:
            self._keep([x], f"used by {name} with running statistics")
            return out
        labels = axis_labels(name, x.dim())
        for key, axes in self._live(x):
            source = self.sources[key]
            if axes & mean_axes:
                if source.kept_because is None:
                    varying = ", ".join(labels[axis] for axis in sorted(axes & mean_axes))
                    source.kept_because = f"{name} in '{module_label(module_name)}' takes its mean along ({varying})"
                continue
            source.cancellations.append(
                Cancellation(
                    order=self.steps,
                    norm_name=module_name,
                    norm_type=type(module).__name__,
                    call=name,
                    functional=not is_norm_module(module),
                    shape=tuple(x.shape),
                    mean_axes=tuple(sorted(mean_axes)),
                    bias_axes=tuple(sorted(axes)),
                    axis_labels=labels,
                )
            )
        return out

    @staticmethod
    def _mean_axes(name: str, args: tuple, kwargs: dict, x: torch.Tensor) -> frozenset | None:
        ndim = x.dim()
        if name.endswith("batch_norm"):
            if not _bn_arg(args, kwargs, 5, "training", False):
                return None
            return frozenset({0, *range(2, ndim)})
        if name.endswith("instance_norm"):
            if not _bn_arg(args, kwargs, 5, "use_input_stats", True):
                return None
            return frozenset(range(2, ndim))
        if name.endswith("group_norm"):
            groups = int(_bn_arg(args, kwargs, 1, "num_groups"))
            per_group = x.shape[1] // groups if ndim > 1 else 1
            return frozenset({*range(2, ndim), *((1,) if per_group > 1 else ())})
        shape = _bn_arg(args, kwargs, 1, "normalized_shape")
        count = 1 if isinstance(shape, int) else len(shape)
        return frozenset(range(ndim - count, ndim))

    # -- where facts travel ------------------------------------------------------------
    def _propagate(
        self,
        func: Any,
        name: str,
        kind: str,
        args: tuple,
        kwargs: dict,
        out: Any,
        tracked: list,
        shape_before: Any = None,
    ) -> None:
        if name in _BN_VALUE_READERS or (kind == _BN_STOP and not _bn_outputs(out) and not _bn_mutates(name)):
            if name in _BN_VALUE_READERS:
                self._keep(tracked, f"read by {name}")
            return  # metadata only: x.shape, x.dim(), x.device
        if kind == _BN_NEUTRAL:
            return
        if kind == _BN_MUL:
            self._mul(name, args, kwargs, out, tracked)
            return
        if kind in (_BN_CAT, _BN_STACK):
            self._concatenate(kind, args, kwargs, out, tracked)
            return
        source = args[0] if args else kwargs.get("input")
        if kind != _BN_STOP and not any(tensor is source for tensor in tracked):
            if kind in (_BN_IDENTITY, _BN_RESHAPE, _BN_BROADCAST):
                return  # the tracked tensor only lends its shape or dtype: x.view_as(y), x.type_as(y)
            self._keep(tracked, f"used by {name}")
            return
        if kind == _BN_STOP:
            self._keep(tracked, f"used by {name}")
            return
        facts = self._live(source)
        for result in _bn_outputs(out):
            mapped = self._map_axes(func, name, kind, args, kwargs, source, result, facts, shape_before)
            if mapped is None:
                self._keep([source], f"used by {name}")
                return
            self._set(result, mapped)

    def _map_axes(
        self,
        func: Any,
        name: str,
        kind: str,
        args: tuple,
        kwargs: dict,
        source: torch.Tensor,
        result: torch.Tensor,
        facts: tuple,
        shape_before: Any = None,
    ) -> list | None:
        if not result.is_floating_point() and not result.is_complex():
            return [] if kind == _BN_SAME_RANK else None  # pooling indices carry no bias; a cast to int uses it
        shape = result.shape
        if kind in (_BN_IDENTITY, _BN_SAME_RANK, _BN_AVG_POOL, _BN_PAD):
            if result.dim() != source.dim():
                return None
            extra: set = set()
            if kind == _BN_AVG_POOL:
                extra = _bn_avg_pool_border(name, args, kwargs, result)
            elif kind == _BN_PAD:
                extra = _bn_pad_border(name, args, kwargs, result)
                if extra is None:
                    return None
            return [(key, _bn_clip(shape, set(axes) | extra)) for key, axes in facts]
        if kind == _BN_PERMUTE:
            order = _bn_permutation(func, args, kwargs, source)
            if order is None:
                return None
            return [(key, _bn_clip(shape, {i for i, axis in enumerate(order) if axis in axes})) for key, axes in facts]
        if kind == _BN_RESHAPE:
            if any(isinstance(value, torch.dtype) for value in args[1:]):
                return None  # x.view(dtype) reinterprets the bits
            before = shape_before if shape_before is not None else source.shape
            return [(key, _bn_clip(shape, _bn_reshape_axes(before, shape, axes))) for key, axes in facts]
        if kind == _BN_ROLL:
            if result.dim() != source.dim():
                return None
            dims = _bn_arg(args, kwargs, 2, "dims", None)
            if dims is None or (isinstance(dims, (tuple, list)) and not dims):
                # Shifted as one flat sequence: values move across every axis.
                return [(key, _bn_clip(shape, range(len(shape)) if axes else ())) for key, axes in facts]
            return [(key, _bn_clip(shape, axes)) for key, axes in facts]
        if kind == _BN_BROADCAST:
            return [(key, _bn_clip(shape, _bn_right_aligned(source, result, axes))) for key, axes in facts]
        if kind == _BN_SELECT:
            dim = _bn_dim(_bn_arg(args, kwargs, 1, "dim", 0), source.dim())
            return [
                (key, _bn_clip(shape, {axis - (axis > dim) for axis in axes if axis != dim})) for key, axes in facts
            ]
        if kind == _BN_GETITEM:
            mapped = []
            for key, axes in facts:
                new_axes = _bn_getitem_axes(source, args[1], axes)
                if new_axes is None:
                    return None
                mapped.append((key, _bn_clip(shape, new_axes)))
            return mapped
        return None

    def _mul(self, name: str, args: tuple, kwargs: dict, out: Any, tracked: list) -> None:
        if not isinstance(out, torch.Tensor):
            self._keep(tracked, f"used by {name}")
            return
        first = args[0] if args else kwargs.get("input")
        second = args[1] if len(args) > 1 else kwargs.get("other")
        dividing = "div" in name
        if (dividing and kwargs.get("rounding_mode") is not None) or (
            dividing and any(tensor is second for tensor in tracked)
        ):
            self._keep(tracked, f"used by {name}")
            return
        facts = []
        for operand, other in ((first, second), (second, first)):
            if isinstance(operand, torch.Tensor) and any(tensor is operand for tensor in tracked):
                extra = _bn_varying(other, out)
                for key, axes in self._live(operand):
                    facts.append((key, _bn_clip(out.shape, _bn_right_aligned(operand, out, axes) | extra)))
        self._set(out, facts)

    def _concatenate(self, kind: str, args: tuple, kwargs: dict, out: Any, tracked: list) -> None:
        tensors = args[0] if args else kwargs.get("tensors", ())
        if not isinstance(out, torch.Tensor) or not isinstance(tensors, (list, tuple)):
            self._keep(tracked, "used by a concatenation")
            return
        dim = _bn_dim(_bn_arg(args, kwargs, 1, "dim", kwargs.get("axis", 0)), out.dim())
        facts = []
        for tensor in tensors:
            if not any(tensor is item for item in tracked):
                continue
            for key, axes in self._live(tensor):
                if kind == _BN_STACK:
                    moved = {axis + (axis >= dim) for axis in axes}
                else:
                    moved = set(axes)
                # Elsewhere along ``dim`` the other pieces carry other values: the bias varies along it.
                facts.append((key, _bn_clip(out.shape, moved | {dim})))
        self._set(out, facts)


def _bn_storage(tensor: torch.Tensor) -> int:
    """The address of a tensor's memory (0 where it has none, as on the meta device)."""
    try:
        if tensor.device.type == "meta" or isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin):
            return 0
        return tensor.untyped_storage().data_ptr()
    except Exception:
        return 0


def _bn_mutates(name: str) -> bool:
    short = name.rsplit(".", 1)[-1]
    return short == "__setitem__" or (short.endswith("_") and not short.endswith("__")) or short.startswith("__i")


def _bn_permutation(func: Any, args: tuple, kwargs: dict, source: torch.Tensor) -> list | None:
    """For each output axis, the input axis it comes from: replay the call on a shape of distinct primes."""
    if source.dim() > len(_BN_PRIMES):
        return None
    sizes = _BN_PRIMES[: source.dim()]
    probe = torch.empty(sizes, device="meta")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            moved = func(probe, *args[1:], **kwargs)
    except Exception:
        return None
    return [sizes.index(size) for size in moved.shape]


def _bn_avg_pool_border(name: str, args: tuple, kwargs: dict, result: torch.Tensor) -> set:
    # With zero padding counted in the divisor (or a divisor override), border outputs
    # average in less of the bias: it then varies along the pooled axes.
    spatial = int(name[-2])
    padding = _bn_arg(args, kwargs, 3, "padding", 0)
    include_pad = _bn_arg(args, kwargs, 5, "count_include_pad", True)
    override = _bn_arg(args, kwargs, 6, "divisor_override", None) if spatial > 1 else None
    padded = any(int(value) for value in (padding if isinstance(padding, (tuple, list)) else (padding,)))
    if override or (padded and include_pad):
        return set(range(result.dim() - spatial, result.dim()))
    return set()


def _bn_pad_border(name: str, args: tuple, kwargs: dict, result: torch.Tensor) -> set | None:
    # Constant padding writes the fill value without the bias: it varies along padded axes.
    # Reflect/replicate/circular padding copies values that carry the bias.
    pad = _bn_arg(args, kwargs, 1, "pad")
    mode = "constant" if name == "torch.constant_pad_nd" else _bn_arg(args, kwargs, 2, "mode", "constant")
    if pad is None:
        return None
    if mode != "constant":
        return set()
    border = set()
    for index in range(0, len(pad), 2):
        if any(int(value) != 0 for value in pad[index : index + 2]):
            border.add(result.dim() - 1 - index // 2)
    return border
