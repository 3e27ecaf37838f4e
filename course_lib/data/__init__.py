"""Manifests, temporal samplers, the clip dataset and the built-in dataset."""
from ..runtime import dataset_override
from .dataset import ClipDataset
from .manifest import (
    Manifest,
    ManifestError,
    VideoEntry,
    probe_manifest,
    read_folder,
    read_hmdb51,
    read_kinetics,
    read_ucf101,
)
from .samplers import (OrderedClipsSampler, RandomClipSampler, RandomStrideSampler, ShortVideoError,
                       TemporalIntervalSampler, UniformClipSampler, clip_span, interval_pmf)
from .synth import CLASSES as SYNTH_CLASSES
from .synth import PRESETS as SYNTH_PRESETS
from .synth import SynthConfig


def builtin_dataset(quick: bool | None = None, *, static_bias: float = 0.0, progress: bool = True) -> Manifest:
    """The built-in motion dataset's manifest, generated under ``data/`` on first use; with ``static_bias=P``
    its twin in which appearance gives the class away with probability P (``data.synth``)."""
    from .synth import ensure

    return ensure(quick=quick, static_bias=static_bias, progress=progress)


def course_dataset(quick: bool | None = None, *, progress: bool = True) -> Manifest:
    """The dataset the notebooks train on: the prepared one named by ``$COURSE_DATASET`` (its classes and
    splits), else the built-in one."""
    path = dataset_override()
    return Manifest.load(path) if path else builtin_dataset(quick, progress=progress)


__all__ = [
    "ClipDataset", "Manifest", "ManifestError", "VideoEntry", "probe_manifest", "read_folder", "read_hmdb51",
    "read_kinetics", "read_ucf101", "RandomClipSampler", "OrderedClipsSampler", "RandomStrideSampler",
    "UniformClipSampler", "TemporalIntervalSampler", "interval_pmf", "ShortVideoError", "clip_span",
    "SYNTH_CLASSES", "SYNTH_PRESETS", "SynthConfig", "builtin_dataset", "course_dataset",
]
