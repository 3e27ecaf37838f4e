"""Batched augmentation: parity with torchvision v2 op by op, temporal consistency, intra-negatives."""
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from course_lib import augment as A


@pytest.fixture
def clips():
    return torch.rand(5, 3, 4, 37, 53, generator=torch.Generator().manual_seed(0))  # N x C x T x H x W


def per_clip(x, fn):
    """Apply fn(clip as T x C x H x W, i) to each clip, the way a per-clip torchvision pipeline would."""
    return torch.stack([fn(c.transpose(0, 1), i).transpose(0, 1) for i, c in enumerate(x)])


FACTORS = torch.tensor([0.2, 0.7, 1.0, 1.4, 1.8])
HUES = torch.tensor([-0.5, -0.2, 0.0, 0.13, 0.45])


@pytest.mark.parametrize("ours, theirs, factors", [
    (A.adjust_brightness, TF.adjust_brightness, FACTORS),
    (A.adjust_contrast, TF.adjust_contrast, FACTORS),
    (A.adjust_saturation, TF.adjust_saturation, FACTORS),
    (A.adjust_hue, TF.adjust_hue, HUES),
], ids=["brightness", "contrast", "saturation", "hue"])
def test_color_ops_match_torchvision(clips, ours, theirs, factors):
    expected = per_clip(clips, lambda c, i: theirs(c, factors[i].item()))
    torch.testing.assert_close(ours(clips, factors), expected, atol=2e-6, rtol=0)


def test_hue_round_trip_is_exact_enough(clips):
    torch.testing.assert_close(A.hsv_to_rgb(A.rgb_to_hsv(clips)), clips, atol=2e-6, rtol=0)


def test_grayscale_blur_solarize_flip_match_torchvision(clips):
    torch.testing.assert_close(A.grayscale(clips).expand_as(clips),
                               per_clip(clips, lambda c, i: TF.rgb_to_grayscale(c, 3)), atol=1e-6, rtol=0)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0])
    torch.testing.assert_close(A.gaussian_blur(clips, sigma, 7),
                               per_clip(clips, lambda c, i: TF.gaussian_blur(c, [7, 7], [sigma[i].item()] * 2)),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(A.solarize(clips, 0.4), per_clip(clips, lambda c, i: TF.solarize(c, 0.4)))
    on = torch.tensor([True, False, True, False, False])
    torch.testing.assert_close(A.hflip(clips, on),
                               per_clip(clips, lambda c, i: TF.horizontal_flip(c) if on[i] else c))


@pytest.mark.parametrize("box", [None, [[3, 4, 10, 12]] * 5, [[0, 0, 37, 53]] * 5], ids=["drawn", "upscale", "whole"])
def test_resized_crop_matches_torchvision(clips, box):
    cfg = A.AugmentConfig(size=24)
    box = A.crop_boxes(cfg, 5, 37, 53, torch.Generator().manual_seed(1)) if box is None else torch.tensor(box)
    expected = per_clip(clips, lambda c, i: TF.resized_crop(c, *box[i].tolist(), [24, 24], antialias=False))
    torch.testing.assert_close(A.resized_crop(clips, box, 24), expected, atol=1e-5, rtol=0)
    # uint8 input is cropped straight from the bytes, same result
    u8 = (clips * 255).round().to(torch.uint8)
    torch.testing.assert_close(A.resized_crop(u8, box, 24), A.resized_crop(u8.float() / 255, box, 24))


def test_crop_boxes_follow_the_area_and_aspect_ranges():
    cfg = A.AugmentConfig(scale=(0.3, 1.0), ratio=(0.5, 2.0))
    box = A.crop_boxes(cfg, 4000, 120, 160, torch.Generator().manual_seed(0))
    top, left, h, w = box.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 120).all() and (left + w <= 160).all()
    area = (h * w).float() / (120 * 160)
    assert area.min() > 0.29 and area.max() <= 1.0
    ratio = w.float() / h
    assert ratio.min() > 0.48 and ratio.max() < 2.05
    assert box.unique(dim=0).shape[0] > 3900  # boxes differ from clip to clip
    # an impossible aspect range falls back to the centred crop, as torchvision does
    box = A.crop_boxes(A.AugmentConfig(scale=(0.99, 1.0), ratio=(3.0, 3.0)), 8, 100, 100)
    assert (box == torch.tensor([33, 0, 33, 100])).all()  # h = round(100 / 3)


def test_the_composed_augmentation_equals_torchvision_with_the_same_parameters():
    clips = torch.rand(8, 3, 4, 37, 53, generator=torch.Generator().manual_seed(0))
    cfg = A.AugmentConfig(size=24, jitter=0.5, grayscale=0.5, blur=0.5, solarize=0.5, blur_kernel=5)
    out, p = A.augment(clips, cfg, torch.Generator().manual_seed(3), return_params=True)
    names = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]

    def reference(c, i):
        c = TF.resized_crop(c, *p["box"][i].tolist(), [24, 24], antialias=False)
        if p["flip"][i]:
            c = TF.horizontal_flip(c)
        if p["jitter"][i]:
            for op in p["order"][i].tolist():
                c = names[op](c, p["factors"][i, op].item())
        if p["gray"][i]:
            c = TF.rgb_to_grayscale(c, 3)
        if p["blur"][i]:
            c = TF.gaussian_blur(c, [5, 5], [p["sigma"][i].item()] * 2)
        if p["solarize"][i]:
            c = TF.solarize(c, 0.5)
        return c

    torch.testing.assert_close(out, per_clip(clips, reference), atol=1e-5, rtol=0)
    # each op was on for some clips and off for others, so the comparison covered both
    for key in ("flip", "jitter", "gray", "blur", "solarize"):
        assert 0 < int(p[key].sum()) < 8, key


def static_clips(n=6, t=8):
    frame = torch.rand(n, 3, 1, 40, 48, generator=torch.Generator().manual_seed(5))
    return frame.expand(n, 3, t, 40, 48).contiguous()


STRONG = A.AugmentConfig(size=24, flip=0.5, jitter=1.0, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
                         grayscale=0.3, blur=0.5, solarize=0.2)


def test_every_frame_of_a_clip_gets_the_same_augmentation():
    x = static_clips()  # every frame of a clip is the same picture
    out = A.augment(x, STRONG, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 8, 24, 24)
    # same crop, flip, jitter, grayscale and blur on every frame: the frames stay identical
    torch.testing.assert_close(out, out[:, :, :1].expand_as(out), atol=1e-6, rtol=0)
    # while the clips of the batch drew different parameters
    assert (out[0, :, 0] - A.augment(x[:1], STRONG, torch.Generator().manual_seed(9))[0, :, 0]).abs().max() > 0.05


def test_the_per_frame_variant_augments_every_frame_differently():
    out = A.augment(static_clips(), STRONG.replace(consistent=False), torch.Generator().manual_seed(0))
    diff = (out - out[:, :, :1]).abs().amax(dim=(1, 3, 4))  # N x T: distance of each frame to frame 0
    assert (diff[:, 1:] > 0.05).float().mean() > 0.9


def test_a_generator_makes_views_reproducible():
    x = (static_clips() * 255).to(torch.uint8)
    a = A.augment(x, STRONG, torch.Generator().manual_seed(7))
    b = A.augment(x, STRONG, torch.Generator().manual_seed(7))
    c = A.augment(x, STRONG, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1


def test_the_sync_free_path_gives_the_same_views_and_never_reads_the_device():
    """A GPU augments without reading a parameter on the host (no nonzero, no unique().tolist()): every
    optional op runs on every clip and each clip keeps its own. The views equal the CPU path's, which
    computes only the clips that need an op; on the meta device (no data) the sync-free path runs
    through while the CPU path, which must read the draws, cannot."""
    x = torch.randint(0, 256, (12, 3, 4, 30, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    for cfg in (STRONG.replace(contrast_mean="channel"), STRONG.replace(consistent=False), STRONG.replace(jitter=0.6)):
        host, p = A.augment(x, cfg, torch.Generator().manual_seed(4), return_params=True, sync_free=False)
        free = A.augment(x, cfg, torch.Generator().manual_seed(4), sync_free=True)
        torch.testing.assert_close(free, host, atol=1e-6, rtol=0)
    for on in ("jitter", "gray", "blur", "solarize"):  # the last draw had clips with and without each op
        assert 0 < p[on].sum() < len(p[on]), on
    assert len(p["order"].unique(dim=0)) > 1
    meta = {k: v.to("meta") for k, v in p.items()}
    assert A.apply(x.to("meta"), meta, STRONG, sync_free=True).shape == (12, 3, 4, STRONG.size, STRONG.size)
    with pytest.raises(NotImplementedError):  # nonzero needs the data
        A.apply(x.to("meta"), meta, STRONG, sync_free=False)


def test_the_block_size_does_not_change_the_views():
    """The CPU works through the batch in cache-sized blocks; the parameters are drawn for the whole
    batch first, so blocks of 1, 3 or all 8 clips give the same views."""
    x = torch.randint(0, 256, (8, 3, 4, 30, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    views = {block: A.augment(x, STRONG, torch.Generator().manual_seed(4), block=block) for block in (1, 3, 8)}
    torch.testing.assert_close(views[1], views[8], atol=1e-6, rtol=0)
    torch.testing.assert_close(views[3], views[8], atol=1e-6, rtol=0)
    # the default picks whole batches of small clips and blocks of a few large ones
    assert A.block_size(8, 3 * 4 * 24 * 24, torch.device("cpu")) == 8
    assert A.block_size(32, 3 * 16 * 112 * 112, torch.device("cpu")) == 3
    assert A.block_size(32, 3 * 16 * 112 * 112, torch.device("cuda")) == 32


def test_a_block_where_every_clip_is_gray_and_some_are_blurred():
    """The gray step must leave a writable tensor: the blur then writes its clips into it."""
    x = torch.randint(0, 256, (8, 3, 4, 30, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    cfg = STRONG.replace(grayscale=1.0, blur=0.5)
    whole, p = A.augment(x, cfg, torch.Generator().manual_seed(4), block=8, return_params=True)
    assert p["gray"].all() and 0 < int(p["blur"].sum()) < 8
    torch.testing.assert_close(whole, A.augment(x, cfg, torch.Generator().manual_seed(4), block=1), atol=1e-6, rtol=0)


def test_hue_matches_torchvision_on_grays_ties_and_extremes():
    x = torch.rand(4, 3, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    x[:, :, 0, 0] = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.0, 1.0])  # grays: all channels equal
    x[:, 1, 0, 1] = x[:, 0, 0, 1]  # r == g, the max or not
    x[:, 2, 0, 2] = x[:, 1, 0, 2]  # g == b
    x[:, :, 1, 0, :3] = torch.eye(3)  # pure red, green, blue
    hues = torch.tensor([-0.5, -1 / 6, 1 / 3, 0.5])
    expected = per_clip(x, lambda c, i: TF.adjust_hue(c, hues[i].item()))
    torch.testing.assert_close(A.adjust_hue(x, hues), expected, atol=2e-6, rtol=0)


def test_blur_kernels_have_no_subnormal_taps():
    kern = A.gaussian_kernels(torch.tensor([0.1, 0.15, 2.0]), 11)
    tiny = kern[(kern > 0)].min()
    assert tiny >= 1e-20  # the far taps of a narrow kernel are exactly zero, not subnormal
    torch.testing.assert_close(kern.sum(1), torch.ones(3))
    assert (kern[:2, 5] > 0.9).all() and (kern[2] > 0.005).all()


def test_torchvision_pipeline_is_consistent_per_clip():
    clip = static_clips(1)[0].transpose(0, 1)  # T x C x H x W
    torch.manual_seed(0)
    out = A.torchvision_pipeline(STRONG)(clip)
    assert out.shape == (8, 3, 24, 24)
    torch.testing.assert_close(out, out[:1].expand_as(out))


def indexed(b=3, t=16):
    """Clips whose frame t is filled with the value t: the frame order is readable from the pixels."""
    return torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).expand(b, 3, t, 4, 4).clone()


def order_of(x):
    return x[:, 0, :, 0, 0].long()  # B x T


def test_frame_repeat_tiles_one_frame():
    order = order_of(A.frame_repeat(indexed(), torch.Generator().manual_seed(0)))
    assert (order == order[:, :1]).all()
    picked = order_of(A.frame_repeat(indexed(b=100), torch.Generator().manual_seed(0)))[:, 0]
    assert len(picked.unique()) == 16  # the repeated frame is drawn per clip, from all 16


def test_chunk_shuffle_swaps_exactly_two_chunks():
    order = order_of(A.chunk_shuffle(indexed(b=200), 4, torch.Generator().manual_seed(0)))
    chunks = order.view(200, 4, 4)
    assert (chunks - chunks[:, :, :1] == torch.arange(4)).all()  # chunks stay whole and in order inside
    which = chunks[:, :, 0] // 4  # B x 4: which chunk sits at each position
    moved = (which != torch.arange(4)).sum(1)
    assert (moved == 2).all()  # two chunks swapped, never none
    assert len({tuple(w) for w in which.tolist()}) == 6  # all 6 swaps of 4 chunks occur
    with pytest.raises(ValueError, match="divisible"):
        A.chunk_shuffle(indexed(t=6), 4)


def test_reverse_and_residual_frames():
    x = indexed(b=1, t=5) / 10
    assert order_of(A.reverse(indexed(b=1, t=5))).tolist() == [[4, 3, 2, 1, 0]]
    r = A.residual_frames(x)[0, 0, :, 0, 0]
    # (x_t - x_{t-1} + 1) / 2, with frame 0 compared to the last frame (wrap-around, as IIC's roll)
    torch.testing.assert_close(r, torch.tensor([(0 - 0.4 + 1) / 2] + [(0.1 + 1) / 2] * 4))


def test_cvrl_contrast_blends_with_each_channels_clip_mean():
    """tf.image.adjust_contrast on a clip laid out as one image (CVRL's video_ssl_preprocess_ops.py):
    (x - mean_c) * f + mean_c, mean_c over every pixel of every frame of channel c, clipped to [0, 1]."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 4, 9, 7, generator=g)
    f = torch.tensor([0.3, 1.0, 1.7])
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    expected = ((x - mean) * f.view(3, 1, 1, 1, 1) + mean).clamp(0, 1)
    torch.testing.assert_close(A.adjust_contrast(x, f, "channel"), expected)
    assert not torch.allclose(A.adjust_contrast(x, f), expected)  # torchvision's per-frame luma is another mean


def test_zero_padded_blur_is_a_convolution_with_zero_padding():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 2, 12, 10, generator=g)
    sigma, k = torch.tensor([0.8, 1.7]), 7
    kern = A.gaussian_kernels(sigma, k)  # N x k
    expected = []
    for i in range(2):
        planes = x[i].reshape(-1, 1, 12, 10)
        w = kern[i]
        y = torch.nn.functional.conv2d(planes, w.view(1, 1, 1, k), padding=(0, k // 2))
        y = torch.nn.functional.conv2d(y, w.view(1, 1, k, 1), padding=(k // 2, 0))
        expected.append(y.reshape(3, 2, 12, 10))
    torch.testing.assert_close(A.gaussian_blur(x, sigma, k, "zeros"), torch.stack(expected))
    edge = A.gaussian_blur(torch.ones(1, 3, 1, 12, 10), sigma[:1], k, "zeros")
    assert edge[0, 0, 0, 0, 0] < 0.9 < edge[0, 0, 0, 6, 5]  # zero padding darkens the border, reflect does not
    assert torch.allclose(A.gaussian_blur(torch.ones(1, 3, 1, 12, 10), sigma[:1], k), torch.ones(1, 3, 1, 12, 10))


def test_cvrl_augmentation_takes_the_official_contrast_and_blur():
    from course_lib.methods.cvrl import CVRL_AUGMENT

    assert (CVRL_AUGMENT.contrast_mean, CVRL_AUGMENT.blur_padding) == ("channel", "zeros")
    assert CVRL_AUGMENT.replace(size=224).kernel == 23  # kernel_size = 224 // 10, radius 11: 23 taps
    clips = torch.randint(0, 256, (4, 3, 4, 40, 40), dtype=torch.uint8)
    out = A.augment(clips, CVRL_AUGMENT.replace(size=32), torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 4, 32, 32) and 0 <= out.min() and out.max() <= 1


def test_the_augmentation_module_leaves_autocast():
    """A training step runs under autocast; the blur's matrix products would then be bf16. VideoAugment
    computes in float32 inside it: the same views as outside."""
    x = torch.randint(0, 256, (4, 3, 4, 30, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    aug = A.VideoAugment(STRONG.replace(blur=1.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = aug(x, torch.Generator().manual_seed(5))
    outside = aug(x, torch.Generator().manual_seed(5))
    assert inside.dtype == torch.float32 and torch.equal(inside, outside)
