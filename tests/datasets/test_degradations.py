import math

import pytest
import torch
import torch.nn.functional as F

from datasets.degradations import (
    CodecConfig,
    Degradation,
    DegradationConfig,
    NoiseConfig,
    TemporalConfig,
    _noise,
)

CONTINUOUS = [("stage1", "blur", "sigma_x"), ("stage1", "noise", "sigma"), ("stage2", "blur", "sigma_x"), ("final", "quality")]


def _get(params: dict, path: tuple[str, ...]) -> torch.Tensor:
    for key in path:
        params = params[key]
    return params


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    torch.manual_seed(0)
    return F.interpolate(torch.rand(6, 3, 8, 8), size=(32, 32), mode="bicubic").clamp(0, 1).view(2, 3, 3, 32, 32)


def test_output_shape_range_and_8bit_levels(hr):
    lr = Degradation(DegradationConfig(codec=CodecConfig(prob=1.0)), scale=4)(hr, torch.Generator().manual_seed(1))
    assert lr.shape == (2, 3, 3, 8, 8) and lr.dtype == hr.dtype
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr, (lr * 255).round() / 255)


def test_same_seed_same_output_other_seed_other_output(hr):
    d = Degradation(DegradationConfig(temporal=TemporalConfig(inconsistent_prob=0.5)), scale=2)
    a = d(hr, torch.Generator().manual_seed(3))
    b = d(hr, torch.Generator().manual_seed(3))
    c = d(hr, torch.Generator().manual_seed(4))
    assert a.shape == (2, 3, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_consistent_clips_share_parameters_across_frames():
    d = Degradation(DegradationConfig(temporal=TemporalConfig(inconsistent_prob=0.0)))
    params = d.sample_params(4, 5, torch.Generator().manual_seed(0))
    assert not params["inconsistent"].any()
    for path in CONTINUOUS:
        values = _get(params, path)
        assert values.shape == (4, 5)
        assert (values == values[:, :1]).all(), path
    assert len(set(_get(params, ("stage1", "blur", "sigma_x"))[:, 0].tolist())) == 4  # clips differ


@pytest.mark.parametrize("drift", ["random_walk", "independent"])
def test_inconsistent_clips_vary_parameters_within_their_ranges(drift):
    config = DegradationConfig(temporal=TemporalConfig(inconsistent_prob=1.0, drift=drift, spread=0.2))
    params = Degradation(config).sample_params(4, 6, torch.Generator().manual_seed(0))
    assert params["inconsistent"].all()
    for path in CONTINUOUS:
        values = _get(params, path)
        assert (values != values[:, :1]).any(dim=1).all(), path
    sigma = _get(params, ("stage1", "noise", "sigma"))
    assert sigma.min() >= 1.0 and sigma.max() <= 30.0
    # discrete choices describe the camera: fixed per clip
    family = _get(params, ("stage1", "blur", "family"))
    assert (family == family[:, :1]).all()


def test_random_walk_moves_by_its_spread():
    config = DegradationConfig(temporal=TemporalConfig(inconsistent_prob=1.0, drift="random_walk", spread=0.01))
    params = Degradation(config).sample_params(64, 8, torch.Generator().manual_seed(0))
    quality = _get(params, ("stage1", "jpeg", "quality")).float()
    steps = quality.diff(dim=1).abs()
    assert steps.max() <= 4  # 0.01 x 65 quality levels per step: a few levels at most


def test_inconsistent_clips_degrade_frames_differently(hr):
    still = hr[:, :1].expand(-1, 3, -1, -1, -1).contiguous()  # three identical frames
    no_noise = DegradationConfig(codec=CodecConfig(prob=0.0))
    for stage in (no_noise.stage1, no_noise.stage2):
        stage.noise = NoiseConfig(prob=0.0)
    d = Degradation(no_noise, scale=4)
    consistent = d.apply(still, d.sample_params(2, 3, torch.Generator().manual_seed(0), torch.tensor([False, False])), torch.Generator())
    assert torch.equal(consistent[:, 0], consistent[:, 1]) and torch.equal(consistent[:, 1], consistent[:, 2])
    params = d.sample_params(2, 3, torch.Generator().manual_seed(0), torch.tensor([True, True]))
    inconsistent = d.apply(still, params, torch.Generator())
    assert not torch.equal(inconsistent[:, 0], inconsistent[:, 2])


def _noise_params(gaussian: bool, gray: bool, sigma: float = 0.0, scale: float = 0.0, n: int = 4) -> dict:
    return {
        "apply": torch.ones(1, dtype=torch.bool),
        "gaussian": torch.tensor([gaussian]),
        "gray": torch.tensor([gray]),
        "sigma": torch.full((1, n), sigma),
        "poisson_scale": torch.full((1, n), scale),
    }


@pytest.mark.parametrize("gray", [False, True])
def test_gaussian_noise_std_matches_sigma(gray):
    x = torch.full((4, 3, 64, 64), 0.5)
    out = _noise(x, _noise_params(True, gray, sigma=10.0), 4, torch.Generator().manual_seed(0))
    noise = out - x
    assert abs(noise.std().item() - 10 / 255) < 0.003
    assert torch.equal(noise[:, 0], noise[:, 1]) == gray
    assert not torch.equal(noise[0], noise[1])  # realisations differ per frame


def test_poisson_noise_std_matches_shot_noise():
    x = torch.full((4, 3, 64, 64), 0.5)
    out = _noise(x, _noise_params(False, False, scale=2.0), 4, torch.Generator().manual_seed(0))
    expected = 2.0 * math.sqrt(0.5 * 255) / 255
    assert abs((out - x).std().item() - expected) / expected < 0.05


def test_blur_lowers_high_frequencies(hr):
    config = DegradationConfig(codec=CodecConfig(prob=0.0))
    for stage in (config.stage1, config.stage2):
        stage.noise.prob, stage.jpeg.prob, stage.resize.directions = 0.0, 0.0, {"keep": 1.0}
    config.final.jpeg.prob, config.final.sinc_prob = 0.0, 0.0
    config.stage1.blur.sigma = (3.0, 3.0)
    checker = (torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2
    clip = checker.float().expand(1, 2, 3, 32, 32).contiguous()
    lr = Degradation(config, scale=1)(clip, torch.Generator().manual_seed(0))
    assert lr.std() < 0.1 * clip.std()


def test_bad_settings_are_rejected(hr):
    with pytest.raises(ValueError, match="not divisible"):
        Degradation(scale=3)(hr, torch.Generator())
    with pytest.raises(ValueError, match="unknown video codec"):
        Degradation(DegradationConfig(codec=CodecConfig(codecs={"vp9": 1.0})))
    bad = DegradationConfig()
    bad.stage1.blur.kinds = {"box": 1.0}
    with pytest.raises(ValueError, match="unknown blur kinds"):
        Degradation(bad).sample_params(1, 1, torch.Generator())


def _bicubic_only(antialias: bool) -> DegradationConfig:
    """Every operator off except the final bicubic resize: the BI degradation of the SR benchmarks."""
    from datasets.degradations import BlurConfig, FinalConfig, JpegConfig, ResizeConfig, StageConfig

    def off() -> StageConfig:
        return StageConfig(blur=BlurConfig(prob=0.0), resize=ResizeConfig(directions={"keep": 1.0}),
                           noise=NoiseConfig(prob=0.0), jpeg=JpegConfig(prob=0.0))

    return DegradationConfig(stage1=off(), stage2=off(), codec=CodecConfig(prob=0.0),
                             final=FinalConfig(modes={"bicubic": 1.0}, antialias=antialias, sinc_prob=0.0,
                                               jpeg=JpegConfig(prob=0.0)))


def test_final_antialias_gives_the_benchmark_bicubic_degradation(hr):
    lr = Degradation(_bicubic_only(antialias=True), scale=4)(hr, torch.Generator().manual_seed(0))
    expected = F.interpolate(hr.flatten(0, 1), size=(8, 8), mode="bicubic", antialias=True).clamp(0, 1)
    torch.testing.assert_close(lr, expected.mul(255).round().div(255).view_as(lr))
    # without the low-pass, lines every 3rd row (above the LR Nyquist rate) alias into strong bands
    lines = (torch.arange(48)[:, None] % 3 == 0).float().expand(1, 1, 3, 48, 48)
    smooth = Degradation(_bicubic_only(antialias=True), scale=4)(lines, torch.Generator().manual_seed(0))
    aliased = Degradation(_bicubic_only(antialias=False), scale=4)(lines, torch.Generator().manual_seed(0))
    assert smooth.std() < 0.05 and aliased.std() > 0.2
