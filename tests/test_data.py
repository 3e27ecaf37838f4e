"""Temporal samplers, the clip dataset with DataLoader workers, and the bad-video policy."""
import shutil
import warnings

import numpy as np
import pytest
import torch
from indexed import read_index
from torch.utils.data import DataLoader

from course_lib.data import (ClipDataset, Manifest, RandomClipSampler, ShortVideoError, UniformClipSampler,
                             VideoEntry, clip_span)
from course_lib.video import VideoError


# ----- samplers -----------------------------------------------------------------------------------

def test_random_sampler_consecutive_and_strided():
    rng = np.random.default_rng(0)
    for stride in (1, 2, 4):
        s = RandomClipSampler(clip_len=8, stride=stride, num_clips=3)
        for n in (29, 50, 200):
            clips = s(n, rng)
            assert clips.shape == (3, 8) and clips.dtype == np.int64
            assert (np.diff(clips, axis=1) == stride).all()  # strided, no wrap when the video is long enough
            assert clips.min() >= 0 and clips.max() < n


def test_random_sampler_covers_every_start_uniformly():
    s = RandomClipSampler(clip_len=4, stride=2)  # span 7: starts 0..13 in a 20-frame video
    rng = np.random.default_rng(1)
    starts = np.array([s(20, rng)[0, 0] for _ in range(14000)])
    counts = np.bincount(starts, minlength=14)
    assert len(counts) == 14 and counts.min() > 850 and counts.max() < 1150  # ~1000 each


def test_uniform_sampler_evenly_spaced_and_deterministic():
    s = UniformClipSampler(clip_len=16, stride=1, num_clips=10)
    clips = s(300)
    centres = clips.mean(axis=1)
    assert np.allclose(centres, (np.arange(10) + 0.5) * 30 - 0.5)  # centred on (k + 0.5) * n / 10
    assert np.array_equal(clips, s(300, np.random.default_rng(5)))
    edge = UniformClipSampler(clip_len=16, num_clips=3)(40)  # clips pushed inside the video
    assert edge.min() == 0 and edge.max() == 39


def test_short_videos_loop_or_raise():
    s = RandomClipSampler(clip_len=16, stride=2)
    assert clip_span(16, 2) == 31 == s.span
    clips = s(10, np.random.default_rng(0))
    assert clips.max() < 10 and (clips == (clips[0, 0] + 2 * np.arange(16)) % 10).all()  # wrapped
    with pytest.raises(ShortVideoError, match="10 frames but a clip spans 31"):
        RandomClipSampler(clip_len=16, stride=2, short="error")(10, np.random.default_rng(0))
    with pytest.raises(ShortVideoError):
        UniformClipSampler(clip_len=16, short="error")(10)
    with pytest.raises(ValueError, match="short must be"):
        RandomClipSampler(short="pad")


# ----- dataset ------------------------------------------------------------------------------------

@pytest.fixture
def indexed_manifest(tmp_path, indexed_video):
    """Six index-carrying videos (so decoded frames tell their own index) in two classes."""
    entries = []
    for i in range(6):
        n = 40 + 10 * i
        src = indexed_video(f"ds_{n}.mp4", n=n, height=32, width=64, keyframe_interval=8)
        rel = f"{'ab'[i % 2]}/v{i}.mp4"
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        shutil.copy(src, tmp_path / rel)
        entries.append(VideoEntry(rel, "ab"[i % 2], "train", n, 25.0))
    return Manifest(tmp_path, ["a", "b"], entries)


def decoded_indices(clips: torch.Tensor) -> np.ndarray:
    """(S, C, T, H, W) uint8 -> (S, T) frame indices read from the pixels."""
    frames = clips.permute(0, 2, 3, 4, 1).numpy()
    return np.array([[read_index(f) for f in clip] for clip in frames])


def test_item_layout_and_exact_frames(indexed_manifest):
    ds = ClipDataset(indexed_manifest, RandomClipSampler(clip_len=8, stride=2, num_clips=2))
    item = ds[3]
    assert item["clips"].dtype == torch.uint8 and item["clips"].shape == (2, 3, 8, 32, 64)
    assert item["label"] == 1 and item["index"] == 3
    assert np.array_equal(decoded_indices(item["clips"]), ds.clip_indices(3))
    assert ds.load(3).shape == (2, 3, 8, 32, 64)
    small = ClipDataset(indexed_manifest, UniformClipSampler(clip_len=4, num_clips=3), short_side=16)
    assert small[0]["clips"].shape == (3, 3, 4, 16, 32)


def test_epochs_change_clips_and_workers_do_not(indexed_manifest):
    ds = ClipDataset(indexed_manifest, RandomClipSampler(clip_len=4), seed=7)
    first = [ds.clip_indices(i) for i in range(len(ds))]
    ds.set_epoch(1)
    assert any(not np.array_equal(a, ds.clip_indices(i)) for i, a in enumerate(first))
    ds.set_epoch(0)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
        batches[workers] = [b for b in loader]
    for b0, b2 in zip(batches[0], batches[2]):
        assert b0["clips"].shape[1:] == (1, 3, 4, 32, 64)
        assert torch.equal(b0["clips"], b2["clips"]) and torch.equal(b0["index"], b2["index"])
    got = [decoded_indices(c) for b in batches[2] for c in b["clips"]]
    assert all(np.array_equal(g, f) for g, f in zip(got, first))


@pytest.fixture
def frame_cache():
    """This process's frame cache, empty, with its limit restored afterwards."""
    from course_lib.data.dataset import FRAMES
    limit = FRAMES.max_bytes
    FRAMES.max_bytes = 512 * 2 ** 20  # the default, whatever COURSE_FRAME_CACHE_MB says
    FRAMES.clear()
    FRAMES.hits = FRAMES.misses = 0
    yield FRAMES
    FRAMES.max_bytes = limit
    FRAMES.clear()


def test_the_frame_cache_gives_the_frames_a_clip_decode_gives(indexed_manifest, frame_cache):
    sampler = RandomClipSampler(clip_len=8, stride=2, num_clips=2)
    cached = ClipDataset(indexed_manifest, sampler, size=(32, 64))
    from_file = ClipDataset(indexed_manifest, sampler, size=(32, 64), cache=False)
    assert cached.cache and not from_file.cache
    assert cached.decoded_bytes() == sum(e.num_frames for e in indexed_manifest) * 32 * 64 * 3
    for epoch in range(3):
        for i in range(len(cached)):
            a, b = cached[(epoch, i)], from_file[(epoch, i)]
            assert torch.equal(a["clips"], b["clips"])
            assert np.array_equal(decoded_indices(a["clips"]), cached.clip_indices(i, epoch))
    assert (frame_cache.misses, frame_cache.hits) == (len(cached), 2 * len(cached))  # each decoded once
    # an index outside the video fails as a file decode does (numpy would wrap -1 to the last frame)
    n = indexed_manifest[0].num_frames
    for bad in ([[-1, 0]], [[0, n]]):
        for ds in (cached, from_file):
            with pytest.raises(VideoError, match="frame"):
                ds.load(0, np.array(bad))
    # a video written again under the same name is decoded again, not served from memory
    v0, v2 = (indexed_manifest.path(indexed_manifest[i]) for i in (0, 2))
    shutil.copy(v2, v0)
    assert torch.equal(cached[(0, 0)]["clips"], from_file[(0, 0)]["clips"])
    assert frame_cache.misses == len(cached) + 1


def test_the_frame_cache_is_bounded_and_its_size_is_checked(indexed_manifest, frame_cache, monkeypatch):
    from course_lib.data.dataset import FrameCache, frame_cache_bytes
    from course_lib.settings import SettingError
    lru = FrameCache(max_bytes=100)
    a, b, c = (np.zeros(40, np.uint8) for _ in range(3))
    lru.put("a", a)
    lru.put("b", b)
    assert lru.get("a") is a  # now b is the least recently used
    lru.put("c", c)
    assert lru.get("b") is None and lru.get("a") is a and lru.get("c") is c and lru.bytes == 80
    lru.put("big", np.zeros(101, np.uint8))  # larger than the whole cache: not kept
    assert lru.get("big") is None and lru.bytes == 80
    # a dataset that would not fit decodes clips from the file and leaves the cache alone
    sampler = RandomClipSampler(clip_len=4)
    total = ClipDataset(indexed_manifest, sampler, size=(32, 64)).decoded_bytes()
    frame_cache.max_bytes = total - 1
    ds = ClipDataset(indexed_manifest, sampler, size=(32, 64))
    ds[0]
    assert not ds.cache and frame_cache.bytes == 0 and frame_cache.misses == 0
    assert not ClipDataset(indexed_manifest, sampler).cache  # no fixed size: the decoded size is not known
    monkeypatch.setenv("COURSE_FRAME_CACHE_MB", "0.5")
    assert frame_cache_bytes() == 2 ** 19
    for bad in ("abc", "-1"):
        monkeypatch.setenv("COURSE_FRAME_CACHE_MB", bad)
        with pytest.raises(SettingError, match=f"COURSE_FRAME_CACHE_MB={bad}: .* a number >= 0"):
            frame_cache_bytes()


@pytest.mark.timeout(120)
@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="no fork on this OS (Windows): workers start by spawn, with no inherited garbage")
def test_decoder_garbage_is_safe_to_collect_in_a_forked_worker(indexed_manifest):
    """A decoder left in a reference cycle is freed by whichever process collects it, possibly a
    forked DataLoader worker; freeing a codec context that owns a thread pool there deadlocks."""
    import gc
    import multiprocessing as mp

    gc.disable()
    try:
        for i in range(len(indexed_manifest)):
            try:
                from course_lib.video import decode_frames
                decode_frames(indexed_manifest.path(indexed_manifest[i]), [0, 999])  # raises
            except VideoError as e:
                cycle = [e]
                cycle.append(cycle)  # the exception (and the decoder frames it holds) is now cyclic garbage
                del cycle
        child = mp.get_context("fork").Process(target=gc.collect)
        child.start()
        child.join(60)
        assert child.exitcode == 0, "the forked child hung while collecting decoder garbage"
    finally:
        gc.enable()
        gc.collect()


def test_garbage_is_collected_in_the_parent_before_workers_fork(tmp_path, synth_quick):
    """A learner's own decoder (FFmpeg's default threads) left in a cycle must not be freed in a worker:
    training, feature extraction and token extraction collect it before their workers fork."""
    import gc
    import weakref
    from course_lib.attentive import extract_tokens
    from course_lib.evaluate import extract_features
    from course_lib.methods import build_method, sampler_for
    from course_lib.models import create_model
    from course_lib.train import TrainConfig, train

    class Decoder:  # stands in for a threaded codec context: only whether it is freed matters
        pass

    def garbage():
        d = Decoder()
        d.cycle = d
        ref = weakref.ref(d)
        del d
        return ref

    ds = ClipDataset(synth_quick, sampler_for("rotation", clip_len=4), split="train", size=(32, 32))
    cfg = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=1, num_workers=1)
    vit = create_model("vit_course", width=0.25)
    runs = {"train": lambda: train(build_method("rotation", create_model("r3d_vcop", width=0.125)), ds, cfg,
                                   tmp_path, progress=False),
            "features": lambda: extract_features(create_model("r3d_vcop", width=0.125), ds, num_workers=1),
            "tokens": lambda: extract_tokens(vit, ds, num_workers=1)}
    gc.disable()
    try:
        for what, run in runs.items():
            ref = garbage()
            run()
            assert ref() is None, f"{what}: forked its workers with the garbage still in the parent"
        ref = garbage()
        extract_features(create_model("r3d_vcop", width=0.125), ds, num_workers=0)
        assert ref() is not None  # no worker, no fork: nothing to collect
    finally:
        gc.enable()
        gc.collect()


def test_vfr_entries_use_timestamps(tmp_path, indexed_video):
    times = np.concatenate([[0], np.cumsum(np.tile([20, 100], 20))[:-1]])  # 40 frames, VFR
    src = indexed_video("ds_vfr.mkv", n=40, timestamps_ms=times.tolist(), keyframe_interval=8)
    shutil.copy(src, tmp_path / "v.mkv")
    m = Manifest(tmp_path, ["a"], [VideoEntry("v.mkv", "a", "train", 40, 16.7, {"vfr": True})])
    ds = ClipDataset(m, RandomClipSampler(clip_len=6))
    cached = ClipDataset(m, RandomClipSampler(clip_len=6), size=(64, 96))  # whole video from the frame cache
    assert cached.cache
    for epoch in range(4):
        ds.set_epoch(epoch)
        cached.set_epoch(epoch)
        assert np.array_equal(decoded_indices(ds[0]["clips"]), ds.clip_indices(0))
        assert torch.equal(cached[0]["clips"], ds[0]["clips"])


def test_bad_video_is_skipped_with_a_counting_warning(indexed_manifest):
    bad = indexed_manifest.path(indexed_manifest[1])
    bad.write_bytes(b"broken")
    ds = ClipDataset(indexed_manifest, RandomClipSampler(clip_len=4))
    with pytest.warns(UserWarning, match=r"skipped a bad video \(1 so far in this process\): .*v1.mp4"):
        item = ds[1]
    assert item["index"] == 2 and item["label"] == 0  # the next good video, with its own label
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[1]["index"] == 2  # known bad: skipped silently, never decoded again
    strict = ClipDataset(indexed_manifest, RandomClipSampler(clip_len=4), strict=True)
    with pytest.raises(VideoError, match="v1.mp4"):
        strict[1]


def test_missing_video_and_all_bad_do_not_hang(indexed_manifest):
    for e in indexed_manifest:
        indexed_manifest.path(e).unlink()
    for size in (None, (32, 64)):  # from the file, and through the frame cache
        ds = ClipDataset(indexed_manifest, RandomClipSampler(clip_len=4), max_skips=3, size=size)
        with pytest.warns(UserWarning, match="file not found"), pytest.raises(VideoError, match="3 bad videos in a row"):
            ds[0]


def test_video_shorter_than_the_clip(indexed_manifest):
    sampler = RandomClipSampler(clip_len=32, stride=2, short="error")  # spans 63 > 40 frames of v0
    strict = ClipDataset(indexed_manifest, sampler, strict=True)
    with pytest.raises(VideoError, match=r"v0.mp4: too short for the clip \(the video has 40 frames"):
        strict[0]
    looped = ClipDataset(indexed_manifest, RandomClipSampler(clip_len=32, stride=2))
    idx = decoded_indices(looped[0]["clips"])
    assert idx.max() < 40 and np.array_equal(idx, looped.clip_indices(0))
