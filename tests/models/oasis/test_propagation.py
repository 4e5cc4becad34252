"""Tests for the light decoder's bidirectional propagation (models/oasis/propagation.py)."""

import pytest
import torch
from safetensors.torch import save_file

from models.oasis import OASIS, PRESETS, OASISConfig, OASISModule
from models.oasis.decoder import LightDecoder

from tests.models.oasis.test_alignment import camera_pan_clip


def _decoder(propagation: str, alignment: str = "dis", seed: int = 0) -> LightDecoder:
    torch.manual_seed(seed)
    decoder = LightDecoder(scale=4, unshuffle=2, temporal_packing=1, channels=8, blocks=2, latent_std=0.1,
                           neighbors=1, alignment=alignment, propagation=propagation)
    with torch.no_grad():  # a "trained" decoder: no part of it is the identity any more
        for p in decoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return decoder.eval()


def _decode(decoder: LightDecoder, clip: torch.Tensor) -> torch.Tensor:
    b, t, _, h, w = clip.shape
    latent = torch.zeros(b, decoder.latent_channels, t, h // decoder.unshuffle, w // decoder.unshuffle)
    with torch.no_grad():
        return decoder.decode(latent, clip)


def test_output_frame_depends_on_every_frame_of_the_clip_only_with_propagation():
    clip = camera_pan_clip(frames=5, step_hr=2, size=16)
    changed = clip.clone()
    changed[:, 4] = changed[:, 4].flip(-1)  # only the last frame: three frames away from frame 0
    for alignment, propagation, travels in (("dis", "none", False), ("none", "none", False),
                                            ("dis", "bidirectional", True), ("none", "bidirectional", True)):
        decoder = _decoder(propagation, alignment)
        difference = (_decode(decoder, clip)[:, 0] - _decode(decoder, changed)[:, 0]).abs().max()
        assert (difference > 1e-7) == travels, (alignment, propagation, float(difference))


@pytest.mark.parametrize("alignment", ["none", "dis"])
def test_untrained_propagation_warm_starts_from_weights_trained_without_it(alignment):
    config = dict(PRESETS["oasis-t"]["config"], decoder_neighbors=1, decoder_alignment=alignment)
    trained = OASIS.from_config(config).eval()
    with torch.no_grad():
        for p in trained.codec.parameters():
            p.add_(0.05 * torch.randn_like(p))
    propagating = OASIS.from_config(dict(config, decoder_propagation="bidirectional")).eval()
    propagating.load_warm_start(trained.state_dict())
    clip = camera_pan_clip(frames=4, step_hr=3, size=16)
    with torch.no_grad():
        assert torch.allclose(propagating(clip), trained(clip), atol=1e-6)
        assert propagating(clip[:, :1]).shape == (1, 1, 3, 64, 64)  # one frame: nothing to propagate
    # the other way round the weights have parts the network lacks: refused, naming them
    with pytest.raises(ValueError, match="unexpected .*codec.propagation"):
        trained.load_warm_start(propagating.state_dict())


def test_module_init_checkpoint_warm_starts_a_propagating_network(tmp_path):
    config = dict(PRESETS["oasis-t"]["config"], decoder_neighbors=1, decoder_alignment="dis")
    weights = tmp_path / "aligned.safetensors"
    save_file(OASIS.from_config(config).state_dict(), str(weights))
    module = OASISModule(network=dict(config, decoder_propagation="bidirectional"), init_checkpoint=str(weights))
    assert module.net.codec.propagation is not None
    assert OASISConfig.from_dict(module.net.config.to_dict()).decoder_propagation == "bidirectional"


@pytest.mark.parametrize("overrides, message", [
    ({"decoder_propagation": "recurrent"}, "decoder_propagation must be one of"),
    ({"decoder": "wan", "wan_path": "wan", "decoder_propagation": "bidirectional"}, "needs the light decoder"),
])
def test_config_refuses_propagation_it_cannot_run(overrides, message):
    with pytest.raises(ValueError, match=message):
        OASISConfig.from_dict(dict(PRESETS["oasis-t"]["config"], **overrides))


def _flows_of(frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, 6, 6, 2, generator=g), torch.randn(1, frames, 6, 6, 2, generator=g)


@pytest.mark.parametrize("warmup", [1, 2, 5])
def test_warmup_is_the_plain_propagation_over_the_clip_replayed_in_reflection(warmup):
    """Warm-up frames w..1 before frame 0 and T-2..T-1-w after frame T-1, with the flows between
    them: the same as propagating an explicitly reflected clip and keeping its middle."""
    from models.oasis.propagation import BidirectionalPropagation

    torch.manual_seed(0)
    plain = BidirectionalPropagation(4)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.2 * torch.randn_like(p))
    warm = BidirectionalPropagation(4, warmup)
    warm.load_state_dict(plain.state_dict())
    t = 4
    features = torch.randn(1, t, 4, 6, 6)
    to_next, to_previous = _flows_of(t, seed=1)
    w = min(warmup, t - 1)  # a warm-up longer than the clip replays the whole clip
    order = [*range(w, 0, -1), *range(t), *range(t - 2, t - 2 - w, -1)]
    # in the reflected clip, "next" of a replayed frame before 0 is its previous in the clip, and so on
    n = len(order)
    reflected_next = torch.stack([(to_next if order[i + 1] > order[i] else to_previous)[:, order[i]] if i + 1 < n
                                  else torch.zeros(1, 6, 6, 2) for i in range(n)], 1)
    reflected_previous = torch.stack([(to_next if order[i - 1] > order[i] else to_previous)[:, order[i]] if i > 0
                                      else torch.zeros(1, 6, 6, 2) for i in range(n)], 1)
    with torch.no_grad():
        expected = plain(features[:, order], reflected_next, reflected_previous)[:, w : w + t]
        torch.testing.assert_close(warm(features, to_next, to_previous), expected)
        assert not torch.allclose(warm(features, to_next, to_previous), plain(features, to_next, to_previous))
        one = features[:, :1]
        torch.testing.assert_close(warm(one, to_next[:, :1], to_previous[:, :1]), one)  # nothing to replay


def test_warmup_config_needs_a_propagation():
    OASISConfig.from_dict(dict(PRESETS["oasis-t"]["config"], decoder_propagation="bidirectional",
                               decoder_propagation_warmup=2))
    with pytest.raises(ValueError, match="decoder_propagation_warmup"):
        OASISConfig.from_dict(dict(PRESETS["oasis-t"]["config"], decoder_propagation_warmup=2))
