"""What is being quantized: the :class:`Workload` (model, data, metric), the built-in workloads,
their models, data, metrics and training, and CFQP calibration.

- :mod:`.base`: :class:`Workload`;
- :mod:`.registry`: :func:`get_workload` by name or ``module:function``;
- :mod:`.builtin`, :mod:`.example`: the built-in workloads; :mod:`.models`, :mod:`.data`,
  :mod:`.metrics`, :mod:`.training`: what they are made of;
- :mod:`.cfqp`: CFQP's calibration set (seed 003) for any SR workload;
- :mod:`.image_folder_spec`, :mod:`.image_folder`: a workload without code (a model factory,
  weights, a folder of images).
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".base": ["MetricFn", "Workload"],
    ".image_folder_spec": ["ImageFolderSpec"],
    ".registry": ["get_workload", "read_spec", "register_workload", "spec_record", "workload_names"],
    ".cfqp": ["cfqp_workload"],
})
