import pytest
import torch
from torch import nn
from torchvision import models

from ffcv_amcl.errors import UserError
from ffcv_amcl.model.backbone import make_backbone, resolve_stem


def test_auto_stem_follows_image_size():
    assert resolve_stem("auto", 32) == "cifar"
    assert resolve_stem("auto", 64) == "cifar"
    assert resolve_stem("auto", 65) == "imagenet"
    assert resolve_stem("imagenet", 32) == "imagenet"


def test_cifar_stem_keeps_resolution():
    net = make_backbone("resnet18", stem="cifar", image_size=32)
    assert isinstance(net.maxpool, nn.Identity)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    # layer4 sees 32/8 = 4x4 maps with the CIFAR stem, 1x1 with the ImageNet stem.
    seen = {}
    net.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 512) and seen["shape"][-2:] == (4, 4)


def test_imagenet_stem_matches_torchvision_features():
    torch.manual_seed(0)
    net = make_backbone("resnet18", stem="imagenet").eval()
    ref = models.resnet18(weights=None).eval()
    missing = ref.load_state_dict(net.state_dict(), strict=False)
    assert set(missing.missing_keys) == {"fc.weight", "fc.bias"} and not missing.unexpected_keys
    ref.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(net(x), ref(x))


def test_resnet50_feature_dim():
    net = make_backbone("resnet50", stem="cifar")
    assert net.feature_dim == 2048
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 2048)


def test_channels_last_input_gives_same_output():
    torch.manual_seed(0)
    net = make_backbone("resnet18", stem="cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    y = net(x)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch,stem", [("vgg11", "auto"), ("resnet18", "tiny")])
def test_bad_names_are_user_errors(arch, stem):
    with pytest.raises(UserError, match="model."):
        make_backbone(arch, stem=stem)


@pytest.mark.parametrize("arch,dim", [("resnet34", 512), ("wide_resnet50_2", 2048), ("resnext50_32x4d", 2048)])
def test_torchvision_resnet_family_feature_dims_are_read_from_the_model(arch, dim):
    with torch.device("meta"):
        net = make_backbone(arch, stem="cifar", image_size=32)
    assert net.feature_dim == dim and net.channels_last and net.conv1.kernel_size == (3, 3)


def test_timm_vit_takes_the_data_size_and_patch_and_other_sizes_too():
    torch.manual_seed(0)
    net = make_backbone("timm:test_vit", image_size=32, patch_size=4).eval()
    assert net.patch_embed.patch_size == (4, 4) and not net.channels_last
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, net.feature_dim)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, net.feature_dim)        # a multi-crop local view


@pytest.mark.parametrize("arch,kw,needle", [("timm:test_resnet", {"patch_size": 4}, "has no patches"),
                                            ("resnet34", {"patch_size": 4}, "applies to timm ViTs"),
                                            ("timm:test_vit", {"stem": "cifar"}, "keeps its own stem"),
                                            ("timm:nope_net", {}, "timm has no model")])
def test_timm_mistakes_are_user_errors(arch, kw, needle):
    with pytest.raises(UserError, match=needle):
        make_backbone(arch, image_size=32, **kw)
