"""CVRL's temporal interval sampler: the drawn gaps follow the analytic density; clips come from one decode."""
import numpy as np
import pytest

from course_lib.data import ClipDataset, TemporalIntervalSampler, interval_pmf


def gaps(sampler, num_frames, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    clips = np.stack([sampler(num_frames, rng) for _ in range(n)])  # n x 2 x T
    return clips, np.abs(clips[:, 1, 0] - clips[:, 0, 0])


@pytest.mark.parametrize("mode, power", [("decreasing", 1.0), ("decreasing", 2.0), ("uniform", 1.0),
                                         ("increasing", 1.0)])
def test_sampled_gaps_match_the_density(mode, power):
    sampler = TemporalIntervalSampler(clip_len=8, stride=2, mode=mode, power=power)
    num_frames = 60
    m = num_frames - 14  # possible starts: 60 - (8 - 1) * 2
    clips, t = gaps(sampler, num_frames)
    assert clips.min() >= 0 and clips.max() < num_frames  # never wraps on a long enough video
    pmf = interval_pmf(m, mode, power)
    t_grid = np.arange(m) / m
    expected = {"decreasing": 1 - t_grid ** power, "uniform": np.ones(m), "increasing": t_grid ** power}[mode]
    np.testing.assert_allclose(pmf, expected / expected.sum())
    # Pearson chi-square of the histogram against the analytic pmf, over bins with expected count >= 5
    observed = np.bincount(t, minlength=m)
    exp = pmf * len(t)
    keep = exp >= 5
    chi2 = ((observed[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = keep.sum() - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)  # 5 standard deviations of a chi-square
    assert abs(t.mean() - (pmf * np.arange(m)).sum()) < 0.5


def test_decreasing_is_denser_near_zero_and_clip_order_is_random():
    clips, t = gaps(TemporalIntervalSampler(clip_len=8, stride=1, mode="decreasing"), 100, n=5000)
    m = 93
    assert (t < m / 2).mean() == pytest.approx(0.75, abs=0.03)  # integral of 2(1 - x) over [0, 1/2]
    first_later = (clips[:, 0, 0] > clips[:, 1, 0]).mean()
    assert 0.45 < first_later < 0.55
    assert (np.diff(clips, axis=2) == 1).all()  # clips keep their stride


def test_short_videos_wrap_and_bad_settings_fail():
    clips, _ = gaps(TemporalIntervalSampler(clip_len=16, stride=2), 20, n=200)
    assert clips.max() < 20 and clips.min() >= 0
    with pytest.raises(ValueError, match="interval mode"):
        TemporalIntervalSampler(mode="sideways")
    with pytest.raises(ValueError, match="2 clips"):
        TemporalIntervalSampler(num_clips=3)


def test_both_clips_come_from_one_decode(synth_quick, monkeypatch):
    from course_lib.data import dataset as dataset_module
    calls = []
    real = dataset_module.decode_clips

    def counting(path, indices, **kwargs):
        calls.append(np.asarray(indices).shape)
        return real(path, indices, **kwargs)

    monkeypatch.setattr(dataset_module, "decode_clips", counting)
    ds = ClipDataset(synth_quick, TemporalIntervalSampler(clip_len=4, stride=2), split="train", size=(32, 32),
                     cache=False)  # from the file: the frame cache would decode the whole video once
    item = ds[0]
    assert item["clips"].shape == (2, 3, 4, 32, 32)
    assert calls == [(2, 4)]  # one decode call for both clips of the video
