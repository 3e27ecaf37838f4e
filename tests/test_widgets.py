"""The explorers driven programmatically: move a control, check what they render."""
import numpy as np
import pytest
import torch

from course_lib.augment import AugmentConfig, resized_crop
from course_lib.widgets import AugmentationExplorer, SamplerExplorer, augmentation_figure, sampler_figure


@pytest.fixture
def still_clip():
    frame = torch.randint(0, 256, (3, 1, 40, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return frame.expand(3, 8, 40, 40).contiguous()  # C x T x H x W, every frame the same picture


def frames_equal(view):
    return torch.allclose(view, view[:, :1].expand_as(view), atol=1e-6)


def test_augmentation_explorer_follows_its_controls(still_clip):
    ex = AugmentationExplorer(still_clip, AugmentConfig(size=32))
    c = ex.controls
    assert ex.views.shape == (2, 3, 8, 32, 32)
    # whole-frame crops and no colour: each view is the resized clip, maybe mirrored
    c["min_area"].value, c["max_aspect"].value = 1.0, 1.0
    c["jitter"].value, c["blur"].value, c["grayscale"].value = 0.0, 0.0, 0.0
    whole = resized_crop(still_clip[None], torch.tensor([[0, 0, 40, 40]]), 32)[0]
    for v in ex.views:
        assert torch.allclose(v, whole, atol=1e-5) or torch.allclose(v, whole.flip(-1), atol=1e-5)
    # small crops: the views no longer show the whole frame
    c["min_area"].value = 0.1
    c["max_aspect"].value = 2.0
    assert not any(torch.allclose(v, whole, atol=1e-3) or torch.allclose(v, whole.flip(-1), atol=1e-3)
                   for v in ex.views)
    # grayscale always on: the three channels agree
    c["grayscale"].value = 1.0
    assert torch.allclose(ex.views[:, 0], ex.views[:, 1], atol=1e-6)
    # consistent in time: the frames of a still clip stay equal; per frame: they do not
    c["jitter"].value = 0.5
    assert all(frames_equal(v) for v in ex.views)
    c["consistent"].value = False
    assert not any(frames_equal(v) for v in ex.views)
    # reseeding draws new views
    before = ex.views.clone()
    ex.reseed()
    assert not torch.allclose(before, ex.views)


def test_augmentation_explorer_animates():
    moving = torch.randint(0, 256, (3, 8, 40, 40), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    ex = AugmentationExplorer(moving, AugmentConfig(size=24))
    from PIL import Image
    import io
    gif = Image.open(io.BytesIO(ex.shown))
    assert ex.shown[:4] == b"GIF8" and gif.n_frames == 8  # one GIF frame per clip frame, the views side by side
    assert gif.size == (6 * (2 * 24 + 2), 6 * 24)  # enlarged 160 // 24 = 6 times
    assert ex.image.value == ex.shown


def test_sampler_explorer_follows_its_controls():
    ex = SamplerExplorer(num_frames=120, n=3000)
    c = ex.controls
    m = 120 - 31 + 1  # starts of a 16-frame clip at stride 2
    assert ex.gaps.max() < m
    decreasing = ex.gaps.mean()
    c["mode"].value = "increasing"
    assert ex.gaps.mean() > decreasing + 20
    c["mode"].value = "uniform"
    assert abs(ex.gaps.mean() - (m - 1) / 2) < 2.5
    c["mode"].value, c["power"].value = "decreasing", 4.0  # flatter near 0, a later drop: larger gaps
    assert ex.gaps.mean() > decreasing
    c["clip_len"].value, c["stride"].value = 32, 3  # longer clips leave fewer starts
    assert ex.gaps.max() < 120 - 94 + 1
    assert ex.figure.axes[2].get_title() == "clip pairs (32 frames, stride 3)"  # the figure follows too
    assert ex.shown[:8] == b"\x89PNG\r\n\x1a\n" and ex.image.value == ex.shown


def test_static_figures_have_the_same_content(still_clip):
    fig = augmentation_figure(still_clip, AugmentConfig(size=24), seed=0, n_frames=4)
    assert len(fig.axes) == 12  # clip, view 1, view 2: 4 frames each
    fig = sampler_figure(100, 8, 2, "decreasing", 1.0, n=500)
    assert len(fig.axes) == 3
    assert np.isclose(fig.axes[0].lines[0].get_ydata().sum(), 1.0)
