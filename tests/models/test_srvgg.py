import torch

from models.srvgg import SRVGG, SRVGGConfig
from restore.registry import load_model


def test_shapes_and_nearest_skip():
    model = SRVGG(SRVGGConfig(scale=2, channels=8, convs=2)).eval()
    clip = torch.rand(1, 3, 3, 7, 9)
    out = model(clip)
    assert out.shape == (1, 3, 3, 14, 18)
    torch.nn.init.zeros_(model.body[-1].weight)
    torch.nn.init.zeros_(model.body[-1].bias)
    torch.testing.assert_close(model(clip), clip.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_a_basicsr_release_checkpoint_loads_through_the_registry(tmp_path):
    """Real-ESRGAN releases wrap the state dict in `params_ema`; names follow `body.N`."""
    reference = SRVGG(SRVGGConfig()).eval()
    path = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params_ema": reference.state_dict()}, path)
    model = load_model("srvgg-compact", path, scale=4)
    clip = torch.rand(1, 1, 3, 8, 8)
    torch.testing.assert_close(model(clip), reference(clip))
