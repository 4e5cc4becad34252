"""Second-order Real-ESRGAN / RealBasicVSR degradations for whole clips, batched in torch.

``Degradation(config, scale)(hr, generator)`` turns HR clips ``(B, T, C, H, W)`` in [0, 1] into LR clips
``(B, T, C, H / scale, W / scale)`` in [0, 1] (8-bit quantised), on the device of ``hr``:

1. stage 1: blur -> random resize -> noise -> JPEG;
2. stage 2: the same operators with their own ranges (JPEG off by default, see 3);
3. final: [resize to the target size + sinc filter] and JPEG, in random order;
4. video-codec compression of each whole clip (libx264 / libx265 / mpeg4 through PyAV, on CPU).

**Temporal modes.** Each clip is ``consistent`` or, with probability ``inconsistent_prob``,
``inconsistent``. A consistent clip gets one parameter draw that every frame shares (noise
realisations still differ per frame). In an inconsistent clip the continuous parameters (blur
sigmas, angle, shape, sinc cutoff, noise levels, JPEG quality) change from frame to frame, by a
random walk or by independent draws around the clip's draw, with ``spread`` as a fraction of each
range. Discrete choices (kernel family and size, noise type, whether an operator runs, codec) stay
per clip: they describe the camera and the pipeline, which do not change mid-shot; a video codec
acts on the whole clip anyway.

**Batch-level draws.** The random resize of each stage (direction, factor, interpolation), the
final interpolation and the order of the final JPEG are drawn once per call, as in Real-ESRGAN,
so that the batch stays one tensor; every call is a new draw.

**Determinism.** All parameters come from the CPU ``generator``; noise comes from a generator on
the clip's device seeded from it; codecs run single-threaded. The same seed and input give the
same output on the same device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from .codecs import VIDEO_CODECS, compress_clip, jpeg
from .kernels import FAMILIES, blur_kernels, filter2d, sinc_kernels

Range = tuple[float, float]
_ODD_SIZES = (7, 9, 11, 13, 15, 17, 19, 21)
# blur kind -> (kernel family, anisotropic)
BLUR_KINDS = {
    "iso": ("gaussian", False),
    "aniso": ("gaussian", True),
    "generalized_iso": ("generalized", False),
    "generalized_aniso": ("generalized", True),
    "plateau_iso": ("plateau", False),
    "plateau_aniso": ("plateau", True),
    "sinc": ("sinc", False),
}
RESIZE_MODES = ("area", "bilinear", "bicubic")


@dataclass
class BlurConfig:
    """Random blur. ``kinds``: weights over ``BLUR_KINDS``; sigmas in pixels; ``sinc_cutoff`` in rad/pixel."""

    prob: float = 1.0
    kinds: dict[str, float] = field(
        default_factory=lambda: {
            "iso": 0.405, "aniso": 0.225, "generalized_iso": 0.108, "generalized_aniso": 0.027,
            "plateau_iso": 0.108, "plateau_aniso": 0.027, "sinc": 0.1,
        }
    )  # fmt: skip
    kernel_sizes: tuple[int, ...] = _ODD_SIZES
    sigma: Range = (0.2, 3.0)
    beta_generalized: Range = (0.5, 4.0)
    beta_plateau: Range = (1.0, 2.0)
    sinc_cutoff: Range = (math.pi / 3, math.pi)


@dataclass
class ResizeConfig:
    """Random resize by a factor drawn from ``up``/``down`` ranges, ``directions`` weights up/down/keep.

    ``relative_to``: ``input`` scales the stage's input size, ``target`` the final LR size (as
    Real-ESRGAN's second stage does, so that the two stages do not compound).
    """

    directions: dict[str, float] = field(default_factory=lambda: {"up": 0.2, "down": 0.7, "keep": 0.1})
    up: Range = (1.0, 1.5)
    down: Range = (0.15, 1.0)
    modes: dict[str, float] = field(default_factory=lambda: {"area": 1.0, "bilinear": 1.0, "bicubic": 1.0})
    relative_to: Literal["input", "target"] = "input"


@dataclass
class NoiseConfig:
    """Additive noise: Gaussian (``sigma`` in 8-bit levels) or Poisson (``poisson_scale`` x shot noise of 255 photons at white)."""

    prob: float = 1.0
    gaussian_prob: float = 0.5
    sigma: Range = (1.0, 30.0)
    poisson_scale: Range = (0.05, 3.0)
    gray_prob: float = 0.4


@dataclass
class JpegConfig:
    """JPEG compression at a quality (1-100) drawn from ``quality``."""

    prob: float = 1.0
    quality: Range = (30.0, 95.0)


@dataclass
class StageConfig:
    """One degradation stage: blur -> resize -> noise -> JPEG."""

    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)


def _stage2() -> StageConfig:
    return StageConfig(
        blur=BlurConfig(prob=0.8, sigma=(0.2, 1.5)),
        resize=ResizeConfig(
            directions={"up": 0.3, "down": 0.4, "keep": 0.3}, up=(1.0, 1.2), down=(0.3, 1.0), relative_to="target"
        ),
        noise=NoiseConfig(sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
        jpeg=JpegConfig(prob=0.0),  # the second stage's JPEG is the final one, see FinalConfig
    )


@dataclass
class FinalConfig:
    """Resize to ``H / scale`` (``modes`` weights) + sinc filter, and JPEG, in random order.

    ``antialias``: low-pass the bilinear/bicubic downscale (MATLAB ``imresize``-like, as
    ``F.interpolate(..., antialias=True)``). With every other operator off and ``modes`` =
    ``{"bicubic": 1}`` this is the classic bicubic (BI) degradation of the SR benchmarks
    (``restore.evaluation.bicubic_downscale``), as ``configs/oasis_s_bi_x4.yaml`` sets it.
    """

    modes: dict[str, float] = field(default_factory=lambda: {"area": 1.0, "bilinear": 1.0, "bicubic": 1.0})
    antialias: bool = False
    sinc_prob: float = 0.8
    sinc_kernel_sizes: tuple[int, ...] = _ODD_SIZES
    sinc_cutoff: Range = (math.pi / 3, math.pi)
    jpeg: JpegConfig = field(default_factory=JpegConfig)
    jpeg_first_prob: float = 0.5


@dataclass
class CodecConfig:
    """Video-codec compression of the whole LR clip.

    ``codecs``: weights over ``libx264``/``libx265``/``mpeg4``. ``rate_control``: weights of a
    constant quality (``crf`` for x264/x265, ``qscale`` for mpeg4) and a target ``bitrate`` in bits/s.
    """

    prob: float = 0.5
    codecs: dict[str, float] = field(default_factory=lambda: {"libx264": 0.5, "libx265": 0.25, "mpeg4": 0.25})
    rate_control: dict[str, float] = field(default_factory=lambda: {"constant": 0.5, "bitrate": 0.5})
    crf: Range = (18.0, 35.0)
    qscale: Range = (2.0, 20.0)
    bitrate: Range = (1e4, 1e5)
    fps: int = 25


@dataclass
class TemporalConfig:
    """``inconsistent_prob``: share of clips degraded per frame; ``drift``: how parameters move between
    frames; ``spread``: step size (random walk, std) or half-width (independent) as a fraction of each range."""

    inconsistent_prob: float = 0.0
    drift: Literal["random_walk", "independent"] = "random_walk"
    spread: float = 0.1


@dataclass
class DegradationConfig:
    """Every operator of the pipeline and its ranges (the scale belongs to the task: see ``Degradation``)."""

    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)
    final: FinalConfig = field(default_factory=FinalConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)


class _Sampler:
    """Draws parameters for ``batch`` clips of ``frames`` frames; ``(B, T)`` tensors follow the temporal mode."""

    def __init__(self, generator: torch.Generator, batch: int, frames: int, inconsistent: torch.Tensor, temporal: TemporalConfig):
        self.gen, self.b, self.t = generator, batch, frames
        self.inconsistent = inconsistent
        self.temporal = temporal

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen, dtype=torch.float64)

    def flag(self, p: float) -> torch.Tensor:
        """Per clip: ``(B,)`` bool, True with probability ``p``."""
        return self._rand(self.b) < p

    def choice(self, weights: Mapping[str, float] | list[float]) -> torch.Tensor:
        """Per clip: ``(B,)`` index into ``weights`` (keys in order)."""
        w = torch.tensor(list(weights.values()) if isinstance(weights, Mapping) else weights, dtype=torch.float64)
        return torch.multinomial(w / w.sum(), self.b, replacement=True, generator=self.gen)

    def batch_choice(self, weights: Mapping[str, float]) -> str:
        keys = list(weights)
        w = torch.tensor([weights[k] for k in keys], dtype=torch.float64)
        return keys[int(torch.multinomial(w / w.sum(), 1, generator=self.gen))]

    def batch_uniform(self, lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * self._rand(1))

    def clip_uniform(self, lo: float, hi: float) -> torch.Tensor:
        """Per clip: ``(B,)`` uniform in [lo, hi]."""
        return lo + (hi - lo) * self._rand(self.b)

    def uniform(self, lo: float, hi: float) -> torch.Tensor:
        """``(B, T)``: one draw per consistent clip; per-frame values in [lo, hi] for inconsistent clips."""
        base = self.clip_uniform(lo, hi).unsqueeze(1)
        width = hi - lo
        spread = self.temporal.spread * width
        if self.temporal.drift == "random_walk":
            steps = torch.randn((self.b, self.t), generator=self.gen, dtype=torch.float64) * spread
            steps[:, 0] = 0
            moved = base + steps.cumsum(dim=1)
        else:
            moved = base + spread * (2 * self._rand(self.b, self.t) - 1)
        if width > 0:  # reflect into [lo, hi] so that the walk does not pile up at the bounds
            folded = torch.remainder(moved - lo, 2 * width)
            moved = lo + torch.where(folded > width, 2 * width - folded, folded)
        else:
            moved = base.expand(self.b, self.t)
        return torch.where(self.inconsistent.unsqueeze(1), moved, base.expand(self.b, self.t)).float()


def _per_frame(values: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B,)`` per-clip values -> ``(B, T)``."""
    return values.unsqueeze(1).expand(-1, frames)


class Degradation:
    """The degradation pipeline (see the module docstring) for an HR/LR size ratio ``scale``.

    Call ``degradation(hr, generator)`` or, to inspect the draws, ``sample_params`` then ``apply``.
    ``inconsistent_prob`` starts at ``config.temporal.inconsistent_prob``; the curriculum sets it.
    """

    def __init__(self, config: DegradationConfig | None = None, scale: int = 4):
        self.config = config or DegradationConfig()
        self.scale = scale
        self.inconsistent_prob = self.config.temporal.inconsistent_prob
        for name in self.config.codec.codecs:
            if name not in VIDEO_CODECS:
                raise ValueError(f"unknown video codec {name!r} (known: {', '.join(VIDEO_CODECS)})")

    def __call__(self, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``(B, T, C, H, W)`` in [0, 1] -> ``(B, T, C, H / scale, W / scale)`` in [0, 1]."""
        return self.apply(hr, self.sample_params(hr.shape[0], hr.shape[1], generator), generator)

    # ------------------------------------------------------------------ parameters
    def sample_params(
        self, batch: int, frames: int, generator: torch.Generator, inconsistent: torch.Tensor | None = None
    ) -> dict:
        """Draw every parameter for ``batch`` clips of ``frames`` frames -> nested dict of tensors and scalars.

        Per-clip values are ``(B,)``, per-frame values ``(B, T)``; ``inconsistent`` (``(B,)`` bool)
        overrides the draw of each clip's temporal mode.
        """
        if inconsistent is None:
            inconsistent = torch.rand(batch, generator=generator, dtype=torch.float64) < self.inconsistent_prob
        s = _Sampler(generator, batch, frames, inconsistent, self.config.temporal)
        c = self.config
        final_sizes = torch.tensor(c.final.sinc_kernel_sizes)[s.choice([1.0] * len(c.final.sinc_kernel_sizes))]
        codec_rc = s.choice(c.codec.rate_control)
        return {
            "inconsistent": inconsistent,
            "stage1": self._stage_params(s, c.stage1),
            "stage2": self._stage_params(s, c.stage2),
            "final": {
                "mode": s.batch_choice(c.final.modes),
                "jpeg_first": s.batch_uniform(0, 1) < c.final.jpeg_first_prob,
                "sinc": s.flag(c.final.sinc_prob),
                "sinc_size": _per_frame(final_sizes, frames),
                "sinc_cutoff": s.uniform(*c.final.sinc_cutoff),
                "jpeg": s.flag(c.final.jpeg.prob),
                "quality": s.uniform(*c.final.jpeg.quality).round().int(),
            },
            "codec": {
                "apply": s.flag(c.codec.prob),
                "codec": s.choice(c.codec.codecs),
                "constant": codec_rc == list(c.codec.rate_control).index("constant"),
                "crf": s.clip_uniform(*c.codec.crf).round().int(),
                "qscale": s.clip_uniform(*c.codec.qscale).round().int(),
                "bitrate": s.clip_uniform(*c.codec.bitrate).round().int(),
            },
        }

    @staticmethod
    def _stage_params(s: _Sampler, stage: StageConfig) -> dict:
        blur, resize, noise = stage.blur, stage.resize, stage.noise
        kinds = list(blur.kinds)
        unknown = set(kinds) - set(BLUR_KINDS)
        if unknown:
            raise ValueError(f"unknown blur kinds {sorted(unknown)} (known: {', '.join(BLUR_KINDS)})")
        kind = s.choice(blur.kinds)
        family = torch.tensor([FAMILIES.index(BLUR_KINDS[kinds[k]][0]) for k in kind])
        aniso = torch.tensor([BLUR_KINDS[kinds[k]][1] for k in kind])
        sigma_x, sigma_y, theta = s.uniform(*blur.sigma), s.uniform(*blur.sigma), s.uniform(-math.pi, math.pi)
        beta_g, beta_p = s.uniform(*blur.beta_generalized), s.uniform(*blur.beta_plateau)
        frames = s.t
        direction = s.batch_choice(resize.directions)
        factor = 1.0 if direction == "keep" else s.batch_uniform(*getattr(resize, direction))
        sizes = torch.tensor(blur.kernel_sizes)[s.choice([1.0] * len(blur.kernel_sizes))]
        return {
            "blur": {
                "apply": s.flag(blur.prob),
                "family": _per_frame(family, frames),
                "size": _per_frame(sizes, frames),
                "sigma_x": sigma_x,
                "sigma_y": torch.where(_per_frame(aniso, frames), sigma_y, sigma_x),
                "theta": torch.where(_per_frame(aniso, frames), theta, torch.zeros_like(theta)),
                "beta": torch.where(_per_frame(family == FAMILIES.index("plateau"), frames), beta_p, beta_g),
                "cutoff": s.uniform(*blur.sinc_cutoff),
            },
            "resize": {"factor": factor, "mode": s.batch_choice(resize.modes)},
            "noise": {
                "apply": s.flag(noise.prob),
                "gaussian": s.flag(noise.gaussian_prob),
                "gray": s.flag(noise.gray_prob),
                "sigma": s.uniform(*noise.sigma),
                "poisson_scale": s.uniform(*noise.poisson_scale),
            },
            "jpeg": {"apply": s.flag(stage.jpeg.prob), "quality": s.uniform(*stage.jpeg.quality).round().int()},
        }

    # ------------------------------------------------------------------ operators
    def apply(self, hr: torch.Tensor, params: dict, generator: torch.Generator) -> torch.Tensor:
        """Degrade ``hr`` ``(B, T, C, H, W)`` with drawn ``params``; ``generator`` seeds the noise."""
        b, t, c, h, w = hr.shape
        scale = self.scale
        if h % scale or w % scale:
            raise ValueError(f"HR size {h}x{w} is not divisible by the scale {scale}")
        target = (h // scale, w // scale)
        noise_gen = torch.Generator(device=hr.device)
        noise_gen.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        x = hr.reshape(b * t, c, h, w).float()
        for name, stage in (("stage1", self.config.stage1), ("stage2", self.config.stage2)):
            p = params[name]
            x = _blur(x, p["blur"], t)
            reference = x.shape[-2:] if stage.resize.relative_to == "input" else target
            size = tuple(max(2, round(n * p["resize"]["factor"])) for n in reference)
            x = _resize(x, size, p["resize"]["mode"])
            x = _noise(x, p["noise"], t, noise_gen)
            x = _jpeg(x, p["jpeg"]["apply"], p["jpeg"]["quality"], t)
        f = params["final"]
        final_jpeg = lambda y: _jpeg(y, f["jpeg"], f["quality"], t)  # noqa: E731
        if f["jpeg_first"]:
            x = final_jpeg(x)
        x = _resize(x, target, f["mode"], antialias=self.config.final.antialias)
        x = _sinc(x, f["sinc"], f["sinc_size"], f["sinc_cutoff"], t)
        if not f["jpeg_first"]:
            x = final_jpeg(x)
        x = self._codec(x.reshape(b, t, c, *target), params["codec"])
        return x.clamp(0, 1).mul(255).round().div(255).to(hr.dtype)

    def _codec(self, clips: torch.Tensor, p: dict) -> torch.Tensor:
        codecs = list(self.config.codec.codecs)
        out = clips.clone()
        for i in torch.nonzero(p["apply"]).flatten().tolist():
            codec = codecs[int(p["codec"][i])]
            if bool(p["constant"][i]):
                quality = p["crf"][i] if VIDEO_CODECS[codec] == "crf" else p["qscale"][i]
                out[i], _ = compress_clip(clips[i], codec, crf=int(quality), fps=self.config.codec.fps)
            else:
                out[i], _ = compress_clip(clips[i], codec, bitrate=int(p["bitrate"][i]), fps=self.config.codec.fps)
        return out


def _frames_of(apply: torch.Tensor, frames: int) -> torch.Tensor:
    """Indices of the frames of the clips where ``apply`` (``(B,)`` bool) is set."""
    return torch.nonzero(apply.repeat_interleave(frames)).flatten()


def _blur(x: torch.Tensor, p: dict, frames: int) -> torch.Tensor:
    idx = _frames_of(p["apply"], frames)
    if idx.numel() == 0:
        return x
    dev = x.device
    pick = lambda key: p[key].reshape(-1)[idx].to(dev)  # noqa: E731
    max_size = int(p["size"].max())
    kernels = blur_kernels(
        pick("family"), pick("size"), pick("sigma_x"), pick("sigma_y"), pick("theta"), pick("beta"), pick("cutoff"), max_size
    )
    x = x.clone()
    x[idx] = filter2d(x[idx], kernels)
    return x


def _sinc(x: torch.Tensor, apply: torch.Tensor, sizes: torch.Tensor, cutoff: torch.Tensor, frames: int) -> torch.Tensor:
    idx = _frames_of(apply, frames)
    if idx.numel() == 0:
        return x
    kernels = sinc_kernels(cutoff.reshape(-1)[idx].to(x.device), sizes.reshape(-1)[idx].to(x.device), int(sizes.max()))
    x = x.clone()
    x[idx] = filter2d(x[idx], kernels)
    return x


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool = False) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":  # area averages already; torch has no antialias flag for it
        return F.interpolate(x, size=size, mode=mode).clamp(0, 1)
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias).clamp(0, 1)


def _noise(x: torch.Tensor, p: dict, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian (``sigma`` / 255) or Poisson noise, independent per frame; grey noise is shared by the channels."""
    idx = _frames_of(p["apply"], frames)
    if idx.numel() == 0:
        return x
    n, c, h, w = x.shape
    gaussian = p["gaussian"].repeat_interleave(frames)[idx].to(x.device).view(-1, 1, 1, 1)
    gray = p["gray"].repeat_interleave(frames)[idx].to(x.device).view(-1, 1, 1, 1)
    sigma = p["sigma"].reshape(-1)[idx].to(x.device).view(-1, 1, 1, 1) / 255
    scale = p["poisson_scale"].reshape(-1)[idx].to(x.device).view(-1, 1, 1, 1)
    clean = x[idx].clamp(0, 1)  # sinc blur overshoots; photon counts cannot be negative
    colour_g = torch.randn(clean.shape, generator=generator, device=x.device)
    gray_g = torch.randn((idx.numel(), 1, h, w), generator=generator, device=x.device)
    gauss = torch.where(gray, gray_g.expand_as(clean), colour_g) * sigma
    # shot noise at 255 photons for white, as 8-bit sources; grey noise from the luma
    photons = 255.0
    luma = (clean * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    colour_p = torch.poisson(clean * photons, generator=generator) / photons - clean
    gray_p = torch.poisson(luma * photons, generator=generator) / photons - luma
    poisson = torch.where(gray, gray_p.expand_as(clean), colour_p) * scale
    x = x.clone()
    x[idx] = (clean + torch.where(gaussian, gauss, poisson)).clamp(0, 1)
    return x


def _jpeg(x: torch.Tensor, apply: torch.Tensor, quality: torch.Tensor, frames: int) -> torch.Tensor:
    idx = _frames_of(apply, frames)
    if idx.numel() == 0:
        return x
    x = x.clone()
    x[idx] = jpeg(x[idx], quality.reshape(-1)[idx].tolist())
    return x
