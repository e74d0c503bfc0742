"""Reward functions across releases: each function receives only the keyword arguments it accepts.

TRL calls ``reward_func(prompts=..., completions=..., **dataset_columns)`` since 0.14 and added
``completion_ids`` (0.18), ``trainer_state`` (0.20), ``environments`` (0.29, with environment_factory),
``log_extra`` / ``log_metric`` (1.0). A 0.14-era function without ``**kwargs`` (``def reward(prompts,
completions)``) fails there with "unexpected keyword argument". trlshim wraps each such function in an
adapter that passes only what its signature takes (the names dropped are reported once per function);
a required parameter the release never provides is a TypeError naming it, at construction when the
dataset's columns are known, else at the call. Functions with ``**kwargs``, reward models (``nn.Module``)
and model ids (``str``) are passed through untouched. The adapter keeps the function's ``__name__`` (TRL
logs rewards under it), stays ``async`` for an ``async def`` (TRL >= 0.27 awaits those) and pickles.
"""
from __future__ import annotations

import functools
import inspect

from ... import report
from ...translate import installed_label
from ...versions import trl_in

# Keyword arguments TRL passes to every reward function besides the dataset's columns, per release.
PASSED = (
    (">=0.14", ("prompts", "completions")),
    (">=0.18", ("completion_ids",)),
    (">=0.20", ("trainer_state",)),
    (">=1.0", ("log_extra", "log_metric")),
)
# Passed only in some setups (0.29+: when environment_factory is given).
SOMETIMES = {"environments": ">=0.29"}
# Dataset columns TRL does not forward as keyword arguments (it passes prompts / completions instead).
NOT_FORWARDED = ("prompt", "completion", "completion_ids")


def passed_by_release() -> set:
    return {name for spec, names in PASSED if trl_in(spec) for name in names}


def _target(func):
    while isinstance(func, functools.partial):
        func = func.func
    return func


def _name(func) -> str:
    target = _target(func)
    return getattr(target, "__name__", type(target).__name__)


def _signature(func):
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def needs_adapter(func) -> bool:
    """A plain callable whose signature has no ``**kwargs``."""
    if isinstance(func, str) or _is_module(func) or not callable(func):
        return False
    sig = _signature(func)
    return sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _is_module(obj) -> bool:
    try:
        import torch.nn as nn
    except ImportError:
        return False
    return isinstance(obj, nn.Module)


def _is_async(func) -> bool:
    target = _target(func)
    call = type(target).__call__ if not inspect.isroutine(target) else None  # a callable class instance
    return inspect.iscoroutinefunction(target) or (call is not None and inspect.iscoroutinefunction(call))


class RewardAdapter:
    """``func`` called with only the keyword arguments it accepts (module-level class: picklable)."""

    def __init__(self, func):
        self.func = func
        self.__wrapped__ = func
        self.__name__ = _name(func)
        self.__qualname__ = getattr(_target(func), "__qualname__", self.__name__)
        self.__doc__ = getattr(func, "__doc__", None)
        params = _signature(func).parameters.values()
        self.accepted = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        self.required = tuple(p.name for p in params if p.default is p.empty and p.kind in (
            p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY))

    def check(self, provided) -> None:
        """A required parameter the release does not provide: TypeError naming it."""
        missing = [n for n in self.required if n not in provided]
        if missing:
            raise TypeError(
                f"reward function {self.__name__!r} requires {', '.join(map(repr, missing))}, which "
                f"{installed_label()} does not pass; it passes {', '.join(sorted(provided))} (the dataset's columns "
                "besides 'prompt'/'completion' are passed by their names). Give the parameter a default or "
                "accept **kwargs"
            )

    def report_dropped(self, names) -> None:
        """Announce (once per function and set of names) the keyword arguments it will not receive."""
        dropped = sorted(set(names) - self.accepted)
        if dropped:
            report.translated(
                f"grpo.reward.{self.__qualname__}:{','.join(dropped)}",
                f"trlshim: reward function {self.__name__!r} takes no {', '.join(dropped)} "
                f"({installed_label()} passes them): called without them",
            )

    def _select(self, kwargs: dict) -> dict:
        self.check(kwargs)
        self.report_dropped(kwargs)
        return {k: v for k, v in kwargs.items() if k in self.accepted}

    def __call__(self, *args, **kwargs):
        return self.func(*args, **self._select(kwargs))

    def __repr__(self):
        return f"<trlshim reward adapter of {self.func!r}>"


class AsyncRewardAdapter(RewardAdapter):
    """The same, for ``async def`` reward functions (TRL >= 0.27 awaits them)."""

    async def __call__(self, *args, **kwargs):
        return await self.func(*args, **self._select(kwargs))


def adapt(func):
    if not needs_adapter(func) or isinstance(func, RewardAdapter):
        return func
    return (AsyncRewardAdapter if _is_async(func) else RewardAdapter)(func)


def _columns(dataset) -> set:
    names = getattr(dataset, "column_names", None)
    if isinstance(names, dict):  # a DatasetDict: the columns every split has
        sets = [set(v) for v in names.values()]
        return set.intersection(*sets) if sets else set()
    return set(names) if isinstance(names, (list, tuple)) else set()


def wrap(call) -> None:
    """Step: adapt every reward function that lacks ``**kwargs``; check its required parameters now when the
    training dataset's columns are known."""
    funcs = call.kwargs.get("reward_funcs")
    if funcs is None:
        return
    single = not isinstance(funcs, (list, tuple))
    adapted = [adapt(f) for f in ([funcs] if single else funcs)]
    for f in adapted:  # at construction, so TRLSHIM_STRICT=1 fails here rather than mid-training
        if isinstance(f, RewardAdapter):
            f.report_dropped(passed_by_release())
    columns = _columns(call.kwargs.get("train_dataset"))
    if columns:
        provided = passed_by_release() | (columns - set(NOT_FORWARDED))
        if call.kwargs.get("environment_factory") is not None:
            provided |= {n for n, spec in SOMETIMES.items() if trl_in(spec)}
        for f in adapted:
            if isinstance(f, RewardAdapter):
                f.check(provided)
    if any(a is not f for a, f in zip(adapted, [funcs] if single else funcs)):
        call.kwargs["reward_funcs"] = adapted[0] if single else adapted
