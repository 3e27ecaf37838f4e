"""Decoding: exact frames after seeking, every container, resizing, VFR, bad files."""
import av
import numpy as np
import pytest
from indexed import read_index

from course_lib.video import (VideoError, decode_clips, decode_frames, decode_from_start, frame_timestamps, output_size,
                              probe)

FORMATS = [  # name, codec, pix_fmt
    ("h264.mp4", "libx264", "yuv420p"),
    ("mpeg4.avi", "mpeg4", "yuv420p"),
    ("vp9.webm", "libvpx-vp9", "yuv420p"),
    ("h264.mkv", "libx264", "yuv420p"),
]


def indices_of(frames: np.ndarray) -> list[int]:
    return [read_index(f) for f in frames]


@pytest.mark.parametrize("name,codec,pix_fmt", FORMATS)
@pytest.mark.parametrize("keyint", [1, 7, 16, 50])
def test_random_index_sets_are_exact(indexed_video, name, codec, pix_fmt, keyint):
    path = indexed_video(f"k{keyint}_{name}", n=120, codec=codec, pix_fmt=pix_fmt, keyframe_interval=keyint)
    rng = np.random.default_rng(keyint)
    for _ in range(6):
        want = rng.integers(0, 120, size=rng.integers(1, 24))  # unsorted, with repeats
        assert indices_of(decode_frames(path, want)) == want.tolist()
    # a clip at the very end and one at the very start
    assert indices_of(decode_frames(path, range(104, 120))) == list(range(104, 120))
    assert indices_of(decode_frames(path, [0, 1, 2])) == [0, 1, 2]


@pytest.mark.parametrize("name,codec,pix_fmt", FORMATS)
def test_seeking_matches_the_naive_decoder_pixel_for_pixel(indexed_video, name, codec, pix_fmt):
    path = indexed_video(f"naive_{name}", n=90, codec=codec, pix_fmt=pix_fmt, keyframe_interval=12)
    want = np.random.default_rng(3).integers(0, 90, size=20)
    for side in (None, 40):
        assert np.array_equal(decode_frames(path, want, short_side=side), decode_from_start(path, want, short_side=side))


def test_seek_decodes_only_from_the_keyframe(indexed_video):
    path = indexed_video("seek.mp4", n=200, keyframe_interval=10)
    stats = {}
    decode_frames(path, range(180, 184), stats=stats)
    # the keyframe at 180 is found by one seek; only the four wanted frames are decoded
    assert stats["seeks"] == 1 and stats["decoded"] <= 4 + 10
    decode_frames(path, [185, 189], stats=stats)
    assert stats["decoded"] <= 10  # from keyframe 180 to 189, never from frame 0


def test_far_apart_frames_reseek_instead_of_decoding_the_gap(indexed_video):
    path = indexed_video("gap.mp4", n=256, keyframe_interval=10)  # 8-bit watermark: indices < 256
    stats = {}
    out = decode_frames(path, [5, 250], stats=stats)
    assert indices_of(out) == [5, 250]
    assert stats["seeks"] == 2 and stats["decoded"] < 30


@pytest.mark.timeout(60)
def test_sparse_keyframes_terminate_and_stay_exact(indexed_video):
    """Keyframe every 250 frames: a seek across a gap lands behind the decoder, which must not loop."""
    path = indexed_video("sparse.mp4", n=250, keyframe_interval=250)
    stats = {}
    want = [5, 100, 101, 200, 249]
    assert indices_of(decode_frames(path, want, stats=stats)) == want
    assert stats["seeks"] == 2 and stats["decoded"] <= 250 + 6  # one wasted seek at most
    assert indices_of(decode_frames(path, range(150, 166))) == list(range(150, 166))


def test_probe_fields(indexed_video):
    path = indexed_video("probe.mp4", n=75, height=48, width=80, fps=30, keyframe_interval=15)
    info = probe(path)
    assert (info.num_frames, info.fps, info.width, info.height) == (75, 30.0, 80, 48)
    assert info.codec == "h264" and info.keyframe_interval == 15 and info.constant_frame_rate
    assert info.duration == pytest.approx(2.5)


@pytest.mark.parametrize("name,codec,pix_fmt", FORMATS)
def test_probe_counts_frames_in_every_container(indexed_video, name, codec, pix_fmt):
    path = indexed_video(f"count_{name}", n=57, codec=codec, pix_fmt=pix_fmt)
    assert probe(path).num_frames == 57  # WebM/MKV store no count: it comes from the packets


def test_layout_and_resize_in_decoder(indexed_video):
    path = indexed_video("resize.mp4", n=20, height=64, width=96)
    out = decode_frames(path, [3, 4], short_side=32)
    assert out.dtype == np.uint8 and out.shape == (2, 32, 48, 3)  # (T, H, W, C), aspect kept
    assert indices_of(out) == [3, 4]
    out = decode_frames(path, [7], size=(40, 40))
    assert out.shape == (1, 40, 40, 3) and indices_of(out) == [7]
    assert output_size(96, 64, 32) == (48, 32) and output_size(61, 97, 30) == (30, 48)


def test_odd_size_and_grayscale_sources(indexed_video):
    odd = indexed_video("odd.mkv", n=30, height=61, width=97, codec="ffv1", pix_fmt="yuv420p")
    assert probe(odd).width == 97 and probe(odd).height == 61
    assert indices_of(decode_frames(odd, [29, 0, 13])) == [29, 0, 13]
    odd444 = indexed_video("odd.mp4", n=30, height=61, width=97, codec="libx264", pix_fmt="yuv444p")
    assert decode_frames(odd444, [5], short_side=30).shape == (1, 30, 48, 3)
    gray = indexed_video("gray.mkv", n=30, gray=True, codec="ffv1", pix_fmt="gray")
    assert probe(gray).pix_fmt == "gray"
    out = decode_frames(gray, [11, 12])
    assert out.shape[-1] == 3 and np.array_equal(out[..., 0], out[..., 2])  # gray becomes RGB
    assert indices_of(out) == [11, 12]


@pytest.mark.parametrize("name", ["vfr.mkv", "vfr.mp4"])
def test_variable_frame_rate_indices(indexed_video, name):
    rng = np.random.default_rng(1)
    gaps = rng.choice([20, 40, 100], size=80)  # 50, 25 and 10 fps mixed
    times = np.concatenate([[0], np.cumsum(gaps)[:-1]])
    path = indexed_video(name, n=80, timestamps_ms=times.tolist(), keyframe_interval=8)
    info = probe(path)
    assert info.num_frames == 80 and not info.constant_frame_rate
    ts, keys = frame_timestamps(path)
    assert len(ts) == 80 and keys[0] == 0
    for _ in range(5):
        want = rng.integers(0, 80, size=10)
        assert indices_of(decode_frames(path, want, timestamps=ts)) == want.tolist()


def test_decode_clips_is_one_pass(indexed_video):
    path = indexed_video("clips.mp4", n=100, keyframe_interval=16)
    clips = np.array([[40, 42, 44, 46], [44, 45, 46, 47]])
    stats = {}
    out = decode_clips(path, clips, stats=stats)
    assert out.shape[:2] == (2, 4)
    assert [indices_of(c) for c in out] == clips.tolist()
    assert stats["seeks"] == 1 and stats["decoded"] <= 47 - 32 + 1  # one pass from keyframe 32


# ----- bad input: each is one clear error naming the file ---------------------------------------

def expect_error(path, fn=probe, *args):
    with pytest.raises(VideoError) as e:
        fn(path, *args)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    assert "not found" in expect_error(tmp_path / "nope.mp4")
    assert "not found" in expect_error(tmp_path / "nope.mp4", decode_frames, [0])


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("these are lecture notes, not a video\n" * 20)
    assert "not a readable video" in expect_error(p)


def test_no_video_stream(tmp_path):
    p = tmp_path / "audio.mka"
    with av.open(str(p), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*s.encode(frame), *s.encode()]:
            c.mux(packet)
    assert "no video stream" in expect_error(p)


def test_zero_decodable_frames(indexed_video, tmp_path):
    src = indexed_video("tobreak.mp4", n=20)
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:  # overwrite every packet's payload, keep the container intact
        for packet in c.demux(c.streams.video[0]):
            if packet.size:
                data[packet.pos: packet.pos + packet.size] = b"\xff" * packet.size
    p = tmp_path / "garbage.mp4"
    p.write_bytes(bytes(data))
    assert "no decodable frames" in expect_error(p)


@pytest.mark.parametrize("name", ["cut.mkv", "cut.mp4"])
def test_truncated_file(indexed_video, tmp_path, name):
    src = indexed_video("full_" + name, n=120)
    p = tmp_path / name
    p.write_bytes(src.read_bytes()[: src.stat().st_size * 6 // 10])
    msg = expect_error(p)
    assert "truncated" in msg or "not a readable video" in msg


def test_video_shorter_than_the_request(indexed_video):
    path = indexed_video("short.mp4", n=12)
    assert "12 frames" in expect_error(path, decode_frames, [8, 12])
    ts, _ = frame_timestamps(path)
    with pytest.raises(VideoError, match="has 12 frames"):
        decode_frames(path, [20], timestamps=ts)
