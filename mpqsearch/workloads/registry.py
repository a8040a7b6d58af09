"""Workloads by name: the built-in ones, those registered by user code, ``module:function``,
and image-folder workloads written as a mapping or a YAML file (:mod:`.image_folder_spec`).

Example::

    workload = get_workload("sr-espcn-x2")           # built-in
    workload = get_workload("my_package.data:digits")  # any function returning a Workload
    workload = get_workload("resnet18-images.yaml")    # model factory + weights + image folder
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..files import read_yaml
from ..specs import load_callable
from ..validation import describe_error
from . import builtin, example
from .base import Workload
from .image_folder import image_folder_workload
from .image_folder_spec import ImageFolderSpec

WorkloadSpec = str | Mapping[str, Any] | ImageFolderSpec
"""What names a workload: a registered name, ``module:function``, a YAML file of an image-folder
workload, or such a workload's mapping."""
YAML_SUFFIXES = (".yaml", ".yml")

WorkloadFactory = Callable[[], Workload]

_REGISTRY: dict[str, WorkloadFactory] = {
    "example": example.example_workload,
    "sr-espcn-x2": builtin.espcn_x2,
    "sr-srresnet-x2": builtin.srresnet_x2,
    "sr-rrdb-x2": builtin.rrdb_x2,
    "sr-espcn-clip-x2": builtin.espcn_clip_x2,
    "sr-espcn-clipfree-x2": builtin.espcn_clipfree_x2,
    "cls-digits": builtin.digits,
}


def register_workload(name: str) -> Callable[[WorkloadFactory], WorkloadFactory]:
    """Decorator registering a workload factory under ``name`` (for code that imports mpqsearch;
    from the command line and experiment files, ``module:function`` needs no registration)."""
    def decorate(factory: WorkloadFactory) -> WorkloadFactory:
        _REGISTRY[name] = factory
        return factory
    return decorate


def workload_names() -> list[str]:
    return sorted(_REGISTRY)


def read_spec(spec: WorkloadSpec, source: str = "workload", base: Path | None = None) -> WorkloadSpec:
    """``spec`` with an image-folder file or mapping read into an :class:`ImageFolderSpec` (paths
    made absolute from ``base``, or the file's directory); a name stays as it is. Errors are
    ``ValueError`` naming ``source`` (or the file) and the key."""
    if isinstance(spec, str) and spec.endswith(YAML_SUFFIXES):
        return read_spec(read_yaml(spec, ValueError), spec, Path(spec).parent)
    if isinstance(spec, Mapping):
        try:
            spec = ImageFolderSpec.model_validate(spec)
        except ValidationError as err:
            key, problem = describe_error(err.errors()[0])
            raise ValueError(f"{source}: {key}: {problem}" if key else f"{source}: {problem}") from None
    if isinstance(spec, ImageFolderSpec):
        return spec.resolved(base or Path.cwd())
    return spec


def spec_record(spec: WorkloadSpec) -> str | dict[str, Any]:
    """``spec`` as plain data that :func:`get_workload` reads back anywhere (a policy's provenance,
    a study's attributes): a name as it is, an image-folder workload as its mapping, paths absolute."""
    spec = read_spec(spec)
    return spec.model_dump() if isinstance(spec, ImageFolderSpec) else spec


def get_workload(spec: WorkloadSpec) -> Workload:
    """A registered workload by name, a user workload by ``module:function``, or an image-folder
    workload (:func:`read_spec`); ``ValueError`` naming the spec (and the known names) otherwise."""
    spec = read_spec(spec)
    if isinstance(spec, ImageFolderSpec):
        return image_folder_workload(spec)
    if ":" in spec:
        workload = load_callable(spec, "workload")()
        if not isinstance(workload, Workload):
            raise ValueError(f"workload {spec!r}: returned {type(workload).__name__}, not a mpqsearch Workload")
        return workload
    if spec not in _REGISTRY:
        raise ValueError(f"unknown workload {spec!r}; built-in workloads: {', '.join(workload_names())}")
    return _REGISTRY[spec]()
