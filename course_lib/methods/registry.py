"""The method registry: ``@register_method(name)`` on a ``Method`` class; everything else asks it.

A method declares, on its class, what the rest of the library needs to know:

* ``sampler(clip_len=, stride=, **options)``: the temporal sampler of its training clips,
  built from its own options (VCOP's ``num_clips`` and ``gap``, CVRL's ``interval``);
* ``augments``: whether it crops on the device (frames are then decoded larger than the crop);
* ``needs``: what its constructor must be given (``num_classes``, ``num_videos``);
* ``clip_problem(clip_len, options)``: why a clip length is too short for it, if it is;
* ``vit_only``: whether it needs a ViT backbone (the masked methods work on tokens).

Its options are the keyword arguments of its constructor and of its ``sampler``; an option
both take (VCOP's ``num_clips``, the speed task's ``strides``) reaches both. Every option value
is checked where it is set (``check_options``, called by ``RunConfig.check``): by the rule the
class names in ``option_rules``, else by ``COMMON_RULES``, else by the type of its default.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any, Callable, ClassVar

from torch import nn

from ..augment import AugmentConfig
from ..data.samplers import RandomClipSampler
from ..settings import Rule, SettingError, flag, integer, number

# what build_method and sampler_for pass themselves; never a method option
CONTEXT = ("backbone", "num_classes", "num_videos", "size", "clip_len", "stride")
_METHODS: dict[str, type["Method"]] = {}
# rules for options many methods share; a class's own option_rules take precedence
COMMON_RULES: dict[str, Rule] = {
    "temperature": number(above=0), "momentum": number(0, 1), "dim": integer(1), "hidden": integer(1, optional=True),
    "queue": integer(1, optional=True),
}


class Method(nn.Module):
    """Base of every method: ``forward(batch) -> (loss, logs)``, plus the declarations above."""

    name: ClassVar[str] = ""
    augments: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ()
    clips_per_video: ClassVar[int] = 1  # for the default sampler
    vit_only: ClassVar[bool] = False
    option_rules: ClassVar[dict[str, Rule | Callable[[str, Any], Any]]] = {}  # option -> rule (settings.py)
    evaluated: ClassVar[str] = "backbone"  # the network its frozen evaluation reads (a module of the method)

    @classmethod
    def sampler(cls, *, clip_len: int, stride: int = 1):
        """``clips_per_video`` clips at independent random starts."""
        return RandomClipSampler(clip_len=clip_len, stride=stride, num_clips=cls.clips_per_video)

    @classmethod
    def clip_problem(cls, clip_len: int, options: dict) -> str | None:
        """Why clips of ``clip_len`` frames cannot train this method with ``options``, or None."""
        return None

    def clip_groups(self) -> list:
        """The parameter groups whose gradient norms are clipped one by one (``TrainConfig.grad_clip``): all of
        them together, unless a method's official code clips its networks apart."""
        return [self.parameters()]

    def set_progress(self, progress: float) -> None:
        """Called by the training loop before every step with the share of training done (0 to 1), so that
        a schedule inside a method (BYOL's EMA momentum) follows it and resumes exactly."""

    @classmethod
    def option_names(cls) -> list[str]:
        """Every option of the method: its constructor's keywords and its sampler's."""
        names = [*inspect.signature(cls).parameters, *inspect.signature(cls.sampler).parameters]
        return list(dict.fromkeys(n for n in names if n not in CONTEXT))


def register_method(name: str, *, augments: bool = False):
    """Class decorator: make ``build_method(name, ...)`` construct the class."""

    def add(cls):
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name, cls.augments = name, augments
        _METHODS[name] = cls
        return cls

    return add


def list_methods() -> list[str]:
    """Registered methods, in the order of the course."""
    return list(_METHODS)


def method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(_METHODS)}.")
    return _METHODS[name]


def _defaults(cls: type[Method]) -> dict:
    """Every option's default value, from the constructor and the sampler."""
    values = {}
    for fn in (cls, cls.sampler):
        for key, p in inspect.signature(fn).parameters.items():
            if key not in CONTEXT and p.default is not p.empty:
                values.setdefault(key, p.default)
    return values


def option_rule(cls: type[Method], option: str) -> Rule | Callable[[str, Any], Any] | None:
    """The rule an option's value must keep: the class's, a common one, or one read off its default's type
    (a bool, an int, a float); None where nothing is known (a mapping such as ``augment``)."""
    if option in cls.option_rules:
        return cls.option_rules[option]
    if option in COMMON_RULES:
        return COMMON_RULES[option]
    default = _defaults(cls).get(option)
    if isinstance(default, bool):
        return flag()
    if isinstance(default, int):
        return integer()
    if isinstance(default, float):
        return number()
    return None


def check_options(name: str, options: dict) -> None:
    """ValueError naming the first option that ``name`` does not have, or SettingError naming the first value
    its rule refuses (one line: ``setting options.temperature=0 is not allowed: ... must be a number > 0.``)."""
    cls = method_class(name)
    known = cls.option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"method {name} has no option {unknown[0]!r}; its options: {', '.join(known) or 'none'}.")
    for option, value in options.items():
        rule = option_rule(cls, option)
        if rule is not None:
            try:
                rule(option, value)
            except SettingError as e:
                raise SettingError(str(e).replace(f"setting {option}=", f"setting options.{option}=", 1)
                                   .replace(f": {option} must", f": {name}'s {option} must", 1)) from None


def resolved_options(name: str, options: dict) -> dict:
    """Every option of method ``name``: ``options`` over the defaults of its constructor and sampler, as plain
    JSON values. A run records them, so a cached run is not reused after a default changed."""
    cls = method_class(name)
    values = {**_defaults(cls), **options}
    if isinstance(values.get("augment"), dict):
        values["augment"] = _augment(cls, values["augment"])
    return json.loads(json.dumps(values, default=_plain))


def _augment(cls: type[Method], changes: dict) -> AugmentConfig:
    """The method's default augmentation with ``changes`` (a mapping from a config or the command line)."""
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    unknown = sorted(set(changes) - set(AugmentConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"augment has no setting {unknown[0]!r}.")
    base = inspect.signature(cls).parameters["augment"].default or AugmentConfig()  # None: no augmentation
    return base.replace(**changes)


def _plain(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"option value {value!r} is not JSON")


def _only(fn, options: dict) -> dict:
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in params}


def build_method(name: str, backbone: nn.Module, *, num_classes: int | None = None, num_videos: int | None = None,
                 size: int = 112, **options) -> Method:
    """The method ``name`` around ``backbone``, with its ``options`` (e.g. ``intra="shuffle"``).

    Options that only its sampler takes are accepted and left out. ``augment`` may be a
    mapping: its keys change the method's default ``AugmentConfig``.
    """
    cls = method_class(name)
    check_options(name, options)
    context = {"num_classes": num_classes, "num_videos": num_videos, "size": size}
    for need in cls.needs:
        if not context[need]:
            raise ValueError(f"the {name} method needs {need}.")
    params = inspect.signature(cls).parameters
    if isinstance(options.get("augment"), dict):
        options = {**options, "augment": _augment(cls, options["augment"])}
    kwargs = {k: v for k, v in context.items() if k in params and v is not None}
    return cls(backbone, **kwargs, **_only(cls, options))


def sampler_for(name: str, *, clip_len: int, stride: int = 1, **options):
    """The training sampler of method ``name``, from the options it takes (the others are ignored)."""
    cls = method_class(name)
    return cls.sampler(clip_len=clip_len, stride=stride, **_only(cls.sampler, options))
