"""GSAM: any input size, what trains, crops in training and whole images in inference, FLOPs, weights."""

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import medsam_ft
from medsam_ft.checkpoint import TrainableCheckpoint, load_checkpoint
from medsam_ft.inference import SlicePredictor
from medsam_ft.io import InputError
from medsam_ft.losses import SegmentationLoss
from medsam_ft.networks.gsam import GSAM, SMAdaptFormer

TINY = dict(backbone="vit_tiny", num_classes=3, image_size=64, method_options={"cnn": "resnet18"})


@pytest.fixture(scope="module")
def gsam_tiny():
    torch.manual_seed(0)
    return medsam_ft.build_network("gsam", **TINY)


@pytest.mark.parametrize("size", [(96, 160), (128, 128), (200, 136)])
def test_any_size_forward_backward(gsam_tiny, size):
    gsam_tiny.train()
    gsam_tiny.zero_grad()
    logits = gsam_tiny(torch.rand(2, 3, *size))
    assert logits.shape == (2, 3, size[0] // 4, size[1] // 4)
    logits.logsumexp(1).mean().backward()
    encoder = gsam_tiny.image_encoder
    trained = {
        "peg": encoder.peg.conv.weight,
        "adapter": encoder.blocks[1].mlp.adapter.up.weight,  # (down gets none while up is at its zero start)
        "cnn": encoder.cnn.body[0].weight,
        "cnn projection": encoder.cnn_out.weight,
        "global rel_pos": encoder.blocks[2].attn.rel_pos_h,
        "decoder pe": gsam_tiny.decoder_pe.weight,
        "mask decoder": gsam_tiny.mask_decoder.mask_tokens.weight,
    }
    for name, tensor in trained.items():
        assert tensor.requires_grad and tensor.grad is not None and tensor.grad.abs().sum() > 0, name
    frozen = {
        "qkv": encoder.blocks[1].attn.qkv.weight,
        "mlp": encoder.blocks[1].mlp.mlp.lin1.weight,
        "patch embed": encoder.patch_embed.proj.weight,
        "windowed rel_pos": encoder.blocks[0].attn.rel_pos_h,
        "neck": encoder.neck[0].weight,
    }
    for name, tensor in frozen.items():
        assert not tensor.requires_grad and tensor.grad is None, name


def test_trainable_parts_and_no_position_table(gsam_tiny):
    state = gsam_tiny.trainable_state_dict()
    assert set(state) == {n for n, p in gsam_tiny.named_parameters() if p.requires_grad} | {
        n for n, _ in gsam_tiny.named_buffers() if n.startswith("image_encoder.cnn.body.")}  # batch-norm statistics
    assert not any("pos_embed" in name for name, _ in gsam_tiny.named_parameters())
    assert "image_encoder.blocks.2.attn.rel_pos_w" in state and "image_encoder.blocks.0.attn.rel_pos_w" not in state
    # adapters start as identity: the adapted block equals the pretrained one
    adapter = SMAdaptFormer(64, 16)
    assert torch.equal(adapter(torch.rand(1, 5, 7, 64)), torch.zeros(1, 5, 7, 64))
    assert len(adapter.branches) == 5  # 1x1, 3x3, dilated 12, 24, 36


def test_trained_on_crops_predicts_a_whole_image(tmp_path):
    torch.manual_seed(0)
    net = medsam_ft.build_network("gsam", **TINY)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = SegmentationLoss(ce_weight=1.0, dice_weight=0.0)
    image = torch.rand(1, 3, 256, 256)
    label = (image[:, :1] > 0.5).long()
    net.train()
    losses = []
    for step in range(6):  # random 64 x 64 crops
        y, x = torch.randint(0, 192, (2,)).tolist()
        loss = loss_fn(net(image[..., y : y + 64, x : x + 64]), label[..., y : y + 64, x : x + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    net.eval()
    with torch.no_grad():
        whole = SlicePredictor(net)(image)
    assert whole.shape == (1, 3, 256, 256) and torch.isfinite(whole).all()
    torch.save({"model": TrainableCheckpoint(net, ["background", "a", "b"]).state_dict()}, tmp_path / "gsam.pt")
    torch.manual_seed(0)  # the same random frozen vit_tiny weights (real backbones load theirs)
    loaded, _ = load_checkpoint(tmp_path / "gsam.pt")
    with torch.no_grad():
        torch.testing.assert_close(SlicePredictor(loaded)(image), whole)


def test_flops_scale_with_the_crop():
    """A forward at a 128 crop costs under a quarter of one at 256 (recorded in the issue note)."""
    torch.manual_seed(0)
    net = medsam_ft.build_network("gsam", **TINY).eval()
    flops = {}
    for size in (128, 256):
        with FlopCounterMode(display=False) as counter:
            net(torch.rand(1, 3, size, size))
        flops[size] = counter.get_total_flops()
    assert flops[128] < 0.25 * flops[256], flops


def test_lite_medsam_gsam_takes_non_square_inputs():
    torch.manual_seed(0)
    net = medsam_ft.build_network("gsam", backbone="lite_medsam", num_classes=2, image_size=64,
                                  method_options={"cnn": "resnet18"})
    net.train()
    logits = net(torch.rand(1, 3, 72, 104))
    assert logits.shape == (1, 2, 72, 104)  # TinyViT: output stride 1
    logits.logsumexp(1).mean().backward()
    adapters = [m for m in net.modules() if isinstance(m, SMAdaptFormer)]
    assert len(adapters) == 10 and all(a.up.weight.grad.abs().sum() > 0 for a in adapters)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 60, 44)).shape == (1, 2, 60, 44)  # padded to multiples of 8 inside, cropped back
    with pytest.raises(ValueError, match="patch_stride"):
        medsam_ft.build_network("gsam", backbone="lite_medsam", num_classes=2, image_size=64,
                                method_options={"cnn": None, "patch_stride": 8})


def test_cnn_weights_from_a_local_file(tmp_path):
    weights = tmp_path / "resnet18.pth"
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), weights)
    net = medsam_ft.build_network("gsam", **{**TINY, "method_options": {"cnn": "resnet18", "cnn_weights": str(weights)}})
    assert isinstance(net, GSAM)
    torch.testing.assert_close(net.image_encoder.cnn.body[0].weight, reference.conv1.weight)
    torch.save({"conv1.weight": reference.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(InputError, match=r"partial\.pth: lacks .* tensors of torchvision's resnet18"):
        partial = {"cnn": "resnet18", "cnn_weights": str(tmp_path / "partial.pth")}
        medsam_ft.build_network("gsam", **{**TINY, "method_options": partial})


def test_patch_stride_8_doubles_the_output_resolution():
    net = medsam_ft.build_network("gsam", **{**TINY, "method_options": {"cnn": None, "patch_stride": 8}})
    assert net.output_stride == 2
    assert net(torch.rand(1, 3, 64, 80)).shape == (1, 3, 32, 40)


@pytest.mark.parametrize("pixel_norm", [None, "sam", {"mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7]}])
def test_cnn_branch_gets_imagenet_statistics(pixel_norm):
    """The ResNet branch sees ImageNet-normalised pixels whatever the transformer branch is fed."""
    net = medsam_ft.build_network("gsam", backbone="lite_medsam", num_classes=2, image_size=32, pixel_norm=pixel_norm,
                                  method_options={"cnn": "resnet18"})
    cnn = net.image_encoder.cnn
    image = torch.rand(1, 3, 16, 16)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    imagenet = (image - mean) / std
    torch.testing.assert_close(net.normalise(image) * cnn.input_scale + cnn.input_shift, imagenet, atol=1e-3, rtol=1e-3)
