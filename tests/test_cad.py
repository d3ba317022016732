"""CAD (no autograd through the encoder, the FFT high-frequency input) and the embedding cache."""

import numpy as np
import pytest
import torch

import medsam_ft
from medsam_ft.networks import EmbeddingCache, embedding_cache_for
from medsam_ft.networks.cad import high_frequency


@pytest.fixture(scope="module")
def cad_tiny():
    torch.manual_seed(0)
    return medsam_ft.build_network("cad", backbone="vit_tiny", num_classes=3, image_size=64)


def test_encoder_takes_no_part_in_autograd(cad_tiny):
    cad_tiny.train()
    assert not cad_tiny.image_encoder.training  # eval mode whatever the network's mode
    image = torch.rand(2, 3, 64, 64)
    embedding = cad_tiny.encode(cad_tiny.preprocess(image))
    assert embedding.grad_fn is None and not embedding.requires_grad
    cad_tiny.zero_grad()
    logits = cad_tiny(image)
    assert logits.shape == (2, 3, 16, 16)
    logits.logsumexp(1).mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in cad_tiny.image_encoder.parameters())
    assert all(p.grad is None for p in cad_tiny.prompt_encoder.parameters())
    assert cad_tiny.adapter.stem.weight.grad.abs().sum() > 0
    assert cad_tiny.mask_decoder.mask_tokens.weight.grad.abs().sum() > 0
    assert set(cad_tiny.trainable_state_dict()) == {
        n for n, _ in cad_tiny.named_parameters() if n.startswith(("adapter.", "mask_decoder."))} | {
        n for n, _ in cad_tiny.named_buffers() if n.startswith("adapter.")}


def test_high_frequency_matches_numpy():
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, 24, 40)).astype(np.float32)
    spectrum = np.fft.fftshift(np.fft.fft2(image), axes=(-2, -1))
    half = int(np.sqrt(0.25 * 24 * 40) // 2)  # 15: a 30 x 30 square (area ~ tau H W) around the centre
    spectrum[..., 12 - half : 12 + half, 20 - half : 20 + half] = 0
    expected = np.abs(np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1))).real)
    np.testing.assert_allclose(high_frequency(torch.from_numpy(image), 0.25).numpy(), expected, atol=1e-5)
    flat = torch.full((1, 1, 16, 16), 0.7)
    assert high_frequency(flat).abs().max() < 1e-6  # a constant image has no high frequencies


def test_every_backbone_and_the_box_prompt():
    torch.manual_seed(0)
    lite = medsam_ft.build_network("cad", backbone="lite_medsam", num_classes=2, image_size=64, prompt="whole_image_box",
                                   method_options={"stem": "strided"})
    with torch.no_grad():
        assert lite(torch.rand(1, 3, 72, 56)).shape == (1, 2, 72, 56)
    with pytest.raises(ValueError, match="unknown prompt"):
        medsam_ft.build_network("cad", backbone="vit_tiny", num_classes=2, image_size=64, prompt="points")


def test_embedding_cache_hits_and_misses():
    torch.manual_seed(0)
    net = medsam_ft.build_network("decoder_only", backbone="vit_tiny", num_classes=2, image_size=64).eval()
    cache = EmbeddingCache()
    net.use_embedding_cache(cache)
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        first = net.image_embeddings(images)
        assert (cache.hits, cache.misses) == (0, 3)
        again = net.image_embeddings(images[[2, 0]])
        assert (cache.hits, cache.misses) == (2, 3)
        assert torch.equal(again, first[[2, 0]])  # identical embeddings from the cache
        uncached = net.image_encoder(net.preprocess(images))
        torch.testing.assert_close(first, uncached)
        # other preprocessing (here: another intensity scaling) is another input: a miss
        net.image_embeddings(images * 0.5)
        assert cache.misses == 6
        # other weights: a miss, even for the same input
        with torch.no_grad():
            net.image_encoder.neck[0].weight.mul_(2.0)
        changed = net.image_embeddings(images[:1])
        assert cache.misses == 7 and not torch.allclose(changed, first[:1])
    small = EmbeddingCache(max_bytes=first[0].numel() * 4 * 2)  # room for two embeddings
    net.use_embedding_cache(small)
    with torch.no_grad():
        net.image_embeddings(images)
    assert len(small.entries) == 2 and small.size_bytes <= small.max_bytes


def test_cache_is_refused_for_random_inputs():
    assert embedding_cache_for(True, "none", None) is not None
    assert embedding_cache_for(True, "samed", None) is None
    assert embedding_cache_for(True, "none", 128) is None
    assert embedding_cache_for(False) is None


def test_adapter_sees_the_image_at_its_own_size():
    """The reference feeds the adapter 512-px images and the encoder 1024: half by default."""
    net = medsam_ft.build_network("cad", backbone="vit_tiny", num_classes=2, image_size=64,
                                  method_options={"stem": "strided"})
    seen = []
    net.adapter.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        net(torch.rand(1, 3, 80, 80))
    assert seen == [(32, 32)]
    other = medsam_ft.build_network("cad", backbone="vit_tiny", num_classes=2, image_size=64,
                                    method_options={"stem": "strided", "adapter_size": 48})
    assert other.adapter_size == 48 and other.config["method_options"]["adapter_size"] == 48
