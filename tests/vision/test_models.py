import pytest
import torch

from vision.errors import ConfigError, WeightsNotAvailableError
from vision.models import ModelSpec, get_model, get_spec, list_models, register_model
from vision.models.efficientnet_lite import EfficientNetLite0, lite0_weights_path


def test_registry_has_the_required_architectures() -> None:
    for name in ("resnet18", "resnet50", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny",
                 "efficientnet_lite0"):
        assert name in list_models()
        spec = get_spec(name)
        assert spec.gradcam_layer and spec.first_conv and spec.classifier
    with pytest.raises(ValueError, match="already registered"):
        register_model(get_spec("resnet18"))
    with pytest.raises(ConfigError, match="unknown architecture"):
        get_spec("resnet9000")
    assert isinstance(get_spec("resnet18"), ModelSpec)


def test_lite0_pretrained_file_loads_every_key_strictly() -> None:
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    assert sum(v.numel() for v in state.values()) == 4_694_073
    model = EfficientNetLite0(num_classes=1000)
    ours = model.state_dict()
    assert set(ours) == set(state)
    assert all(ours[k].shape == v.shape for k, v in state.items())
    model.load_state_dict(state, strict=True)


def test_get_model_imagenet_keeps_pretrained_weights_and_adapts_bands() -> None:
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    rgb = get_model("efficientnet_lite0", 10, 3, "imagenet", band_names=["B04", "B03", "B02"])
    # Every pretrained tensor but the replaced head is in the model unchanged.
    for k, v in rgb.state_dict().items():
        if k in state and not k.startswith("_fc"):
            assert torch.equal(v, state[k]), k
    assert rgb._fc.out_features == 10
    bands = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"]
    ms = get_model("efficientnet_lite0", 10, 13, "imagenet", band_names=bands)
    w, w0 = ms._conv_stem.weight, state["_conv_stem.weight"]
    assert w.shape == (32, 13, 3, 3)
    scale = 3 / 13
    assert torch.allclose(w[:, 3], w0[:, 0] * scale)  # B04 <- red filter
    assert torch.allclose(w[:, 2], w0[:, 1] * scale)  # B03 <- green
    assert torch.allclose(w[:, 1], w0[:, 2] * scale)  # B02 <- blue
    assert torch.allclose(w[:, 7], w0.mean(dim=1) * scale)  # B08 (NIR) <- mean of RGB
    assert torch.equal(ms._blocks[3]._depthwise_conv.weight, state["_blocks.3._depthwise_conv.weight"])


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny"])
def test_torchvision_architectures_any_band_count(name: str) -> None:
    m = get_model(name, 5, 7, "none").eval()
    assert m(torch.zeros(2, 7, 64, 64)).shape == (2, 5)


def test_torchvision_imagenet_weights_are_never_downloaded(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotAvailableError, match="Nothing is downloaded"):
        get_model("resnet18", 10, 3, "imagenet")
    assert not any(tmp_path.rglob("*.pth"))


def test_weights_from_a_local_file(tmp_path) -> None:
    a = get_model("resnet18", 4, 5, "none")
    path = tmp_path / "w.pt"
    torch.save(a.state_dict(), path)
    b = get_model("resnet18", 4, 5, str(path))
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    c = get_model("resnet18", 7, 5, str(path))  # other class count: head re-initialised
    assert torch.equal(c.conv1.weight, a.conv1.weight) and c.fc.out_features == 7
    with pytest.raises(WeightsNotAvailableError):
        get_model("resnet18", 4, 5, str(tmp_path / "missing.pt"))


def test_normalized_classifier_resizes_to_its_working_size():
    import torch.nn.functional as F

    from vision.models import NormalizedClassifier

    torch.manual_seed(0)
    backbone = get_model("resnet18", 4, in_channels=3, weights="none").eval()
    net = NormalizedClassifier(backbone, [10.0, 20.0, 30.0], [2.0, 4.0, 8.0], work_size=(48, 40)).eval()
    x = torch.rand(2, 3, 32, 32) * 255
    seen: list[tuple[int, ...]] = []
    backbone.conv1.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    with torch.no_grad():
        got = net(x)
        z = (x - torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)) / torch.tensor([2.0, 4.0, 8.0]).view(1, 3, 1, 1)
        want = backbone(F.interpolate(z, size=(48, 40), mode="bilinear", align_corners=False))
    assert seen[0] == (2, 3, 48, 40) and torch.allclose(got, want, atol=1e-6)
    plain = NormalizedClassifier(backbone, [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]).eval()
    with torch.no_grad():
        plain(x)
    assert seen[-1] == (2, 3, 32, 32)


def test_test_time_views_average_probabilities_and_make_the_model_symmetric():
    from vision.models import NormalizedClassifier

    torch.manual_seed(0)
    backbone = get_model("resnet18", 5, in_channels=3, weights="none").eval()
    d8 = NormalizedClassifier(backbone, [10.0] * 3, [20.0] * 3, tta="d8").eval()
    flips = NormalizedClassifier(backbone, [10.0] * 3, [20.0] * 3, tta="flips").eval()
    x = torch.rand(3, 3, 32, 32) * 255
    with torch.no_grad():
        z = (x - 10.0) / 20.0
        views = [z, z.flip(-1), z.flip(-2), z.flip(-2).flip(-1)]
        views += [v.transpose(-1, -2) for v in views]
        want = torch.stack([backbone(v).softmax(1) for v in views]).mean(0)
        got = d8(x)
        assert torch.allclose(got.softmax(1), want, atol=1e-6)  # log-mean-probability out
        # All 8 symmetries of the square give the same answer; flips only their own 4.
        assert torch.allclose(d8(torch.rot90(x, 1, (-2, -1))), got, atol=1e-5)
        assert torch.allclose(flips(x.flip(-1)), flips(x), atol=1e-5)
        assert not torch.allclose(flips(torch.rot90(x, 1, (-2, -1))), flips(x), atol=1e-3)
    with pytest.raises(ConfigError, match="tta"):
        NormalizedClassifier(backbone, [0.0] * 3, [1.0] * 3, tta="rot")


def test_d8_views_need_a_square_chip():
    from vision.config import ModelConfig

    with pytest.raises(ValueError, match="square"):
        ModelConfig(architecture="resnet18", name="m", input_size=(64, 32), tta="d8")
    assert ModelConfig(architecture="resnet18", name="m", input_size=(64, 32), work_size=(48, 48),
                       tta="d8").tta == "d8"


def test_tiny_cnn_is_a_real_test_only_architecture() -> None:
    """The test architecture: any band count, its Grad-CAM layer exists, it learns, and it has
    no pretrained weights (asking for them says so)."""
    spec = get_spec("tiny_cnn")
    assert spec.test_only and not get_spec("efficientnet_lite0").test_only
    torch.manual_seed(0)
    m = get_model("tiny_cnn", 3, 13, "none")
    assert m.get_submodule(spec.first_conv).in_channels == 13
    assert isinstance(m.get_submodule(spec.gradcam_layer), torch.nn.Module)
    x = torch.randn(32, 13, 16, 16)
    y = (x[:, 0].mean((1, 2)) > 0).long() + (x[:, 1].mean((1, 2)) > 0).long()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(WeightsNotAvailableError, match="weights: none"):
        get_model("tiny_cnn", 3, 3, "imagenet")
    with pytest.raises(ConfigError, match="did you mean 'tiny_cnn'"):
        get_spec("tiny_cn")


def test_half_backbone_keeps_normalisation_and_views_in_float32() -> None:
    from vision.models import NormalizedClassifier

    torch.manual_seed(0)
    net = NormalizedClassifier(get_model("tiny_cnn", 4, 3, "none"), [5000.0] * 3, [2000.0] * 3, tta="d8").eval()
    half = net.half_backbone()
    assert half.mean.dtype == torch.float32 and half.std.dtype == torch.float32
    assert all(p.dtype == torch.float16 for p in half.backbone.parameters())
    assert all(p.dtype == torch.float32 for p in net.backbone.parameters())  # a copy
    x = torch.rand(4, 3, 32, 32) * 10000
    with torch.no_grad():
        a, b = net(x), half(x)
    assert b.dtype == torch.float32 and not half.training
    assert torch.allclose(a.softmax(1), b.softmax(1), atol=2e-3)


def test_a_weights_file_that_is_not_a_state_dict_is_named(tmp_path) -> None:
    bad = tmp_path / "passwd"
    bad.write_text("root:x:0:0\n")
    with pytest.raises(ConfigError, match=f"weights {bad}: not a state_dict"):
        get_model("tiny_cnn", 3, 3, str(bad))
