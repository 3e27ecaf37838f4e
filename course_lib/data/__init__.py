"""Manifests, temporal samplers, the clip dataset and the built-in dataset."""
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


def builtin_dataset(quick: bool | None = None, *, progress: bool = True) -> Manifest:
    """The built-in motion dataset's manifest, generated under ``data/`` on first use."""
    from .synth import ensure

    return ensure(quick=quick, progress=progress)


__all__ = [
    "ClipDataset", "Manifest", "ManifestError", "VideoEntry", "probe_manifest", "read_folder", "read_hmdb51",
    "read_kinetics", "read_ucf101", "RandomClipSampler", "OrderedClipsSampler", "RandomStrideSampler",
    "UniformClipSampler", "TemporalIntervalSampler", "interval_pmf", "ShortVideoError", "clip_span",
    "SYNTH_CLASSES", "SYNTH_PRESETS", "SynthConfig", "builtin_dataset",
]
