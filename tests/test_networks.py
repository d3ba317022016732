import pytest
import torch

import medsam_ft
from medsam_ft.backbones import build_backbone
from medsam_ft.networks import SAMed, SemanticSAM
from medsam_ft.networks.samed import LoRAQKV


def _randomise_lora(net, std=0.02):
    torch.manual_seed(0)
    for layer in net.lora_layers:
        for module in layer.lora_modules:
            torch.nn.init.normal_(module.weight, std=std)


@pytest.fixture(scope="module")
def lite64():
    """decoder_only and samed on LiteMedSAM at 64 px (deterministic embedded weights)."""
    return (
        medsam_ft.build_network("decoder_only", backbone="lite_medsam", num_classes=9, image_size=64),
        medsam_ft.build_network("samed", backbone="lite_medsam", num_classes=9, image_size=64),
    )


@pytest.mark.parametrize("method", ["decoder_only", "samed"])
def test_contract_vit(method):
    net = medsam_ft.build_network(method, backbone="vit_tiny", num_classes=3, image_size=64)
    assert net.output_stride == 4
    logits = net(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 3, 16, 16)
    # another input size: resized to the backbone and back to H/s x W/s
    assert net(torch.rand(1, 3, 96, 80)).shape == (1, 3, 24, 20)
    assert net.config["method"] == method and net.config["num_classes"] == 3
    with pytest.raises(ValueError, match=r"float\[B, 3, H, W\]"):
        net(torch.rand(2, 1, 64, 64))


def test_contract_lite_medsam(lite64):
    decoder_only, samed = lite64
    assert decoder_only.output_stride == 1
    with torch.no_grad():
        assert decoder_only(torch.rand(2, 3, 64, 64)).shape == (2, 9, 64, 64)


def test_untrained_samed_equals_decoder_only(lite64):
    decoder_only, samed = lite64
    x = torch.rand(2, 3, 64, 64)
    decoder_only.eval(), samed.eval()
    with torch.no_grad():
        torch.testing.assert_close(samed(x), decoder_only(x), atol=1e-6, rtol=0)


def test_class_tokens_start_from_sam_tokens():
    backbone = build_backbone("vit_tiny", image_size=64)
    sam_token = backbone.mask_decoder.mask_tokens.weight[0].detach().clone()
    sam_mlp_weight = backbone.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight.detach().clone()
    net = SemanticSAM(backbone, 6, {"method": "decoder_only"})
    for c in range(6):
        torch.testing.assert_close(net.mask_decoder.mask_tokens.weight[c], sam_token)
        torch.testing.assert_close(net.mask_decoder.output_hypernetworks_mlps[c].layers[0].weight, sam_mlp_weight)
    # separate copies: training one class head leaves the others alone
    heads = net.mask_decoder.output_hypernetworks_mlps
    assert heads[1].layers[0].weight is not heads[2].layers[0].weight
    assert not hasattr(net.mask_decoder, "iou_prediction_head")
    with torch.no_grad():
        probabilities = net(torch.rand(1, 3, 64, 64)).softmax(1)
    torch.testing.assert_close(probabilities, torch.full_like(probabilities, 1 / 6))  # uniform start


def test_trainable_counts_vit_b():
    d = medsam_ft.build_network("decoder_only", backbone="vit_b", num_classes=9, image_size=512)
    s = medsam_ft.build_network("samed", backbone="vit_b", num_classes=9, image_size=512)
    assert s.num_parameters(trainable_only=True) - d.num_parameters(trainable_only=True) == 147_456
    assert len(s.lora_layers) == 12


def test_trainable_parts_are_declared_by_module(lite64):
    decoder_only, samed = lite64
    for name, p in samed.named_parameters():
        expected = name.startswith(("mask_decoder.", "prompt_encoder.no_mask_embed.")) or ".lora_" in name
        assert p.requires_grad == expected, name
    assert set(decoder_only.trainable_state_dict()) == {
        n for n, _ in decoder_only.named_parameters() if n.startswith(("mask_decoder.", "prompt_encoder.no_mask_embed."))
    }
    lora_keys = set(samed.trainable_state_dict()) - set(decoder_only.trainable_state_dict())
    assert lora_keys and all(".lora_" in k for k in lora_keys)
    # TinyViT's batch norms are frozen: they stay in eval mode when the network trains
    samed.train()
    norms = [m for m in samed.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert samed.mask_decoder.training
    samed.eval()


def test_decoder_only_runs_encoder_without_autograd(lite64):
    decoder_only, _ = lite64
    decoder_only.train()
    decoder_only(torch.rand(1, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in decoder_only.image_encoder.parameters())
    assert decoder_only.mask_decoder.mask_tokens.weight.grad is not None
    decoder_only.zero_grad(set_to_none=True)
    decoder_only.eval()


def test_tinyvit_lora_touches_only_query_and_value_rows():
    net = medsam_ft.build_network("samed", backbone="lite_medsam", num_classes=2, image_size=64)
    layer = net.lora_layers[0]
    attn = next(m for m in net.image_encoder.modules() if getattr(m, "qkv", None) is layer)
    _randomise_lora(net)
    x = torch.rand(3, 5, layer.qkv.in_features)
    with torch.no_grad():
        base = layer.qkv(x).view(3, 5, attn.num_heads, -1).split([attn.key_dim, attn.key_dim, attn.d], dim=3)
        lora = layer(x).view(3, 5, attn.num_heads, -1).split([attn.key_dim, attn.key_dim, attn.d], dim=3)
        dq = layer.lora_q_b(layer.lora_q_a(x)).view(3, 5, attn.num_heads, attn.key_dim)
        dv = layer.lora_v_b(layer.lora_v_a(x)).view(3, 5, attn.num_heads, attn.d)
    torch.testing.assert_close(lora[0], base[0] + dq)
    torch.testing.assert_close(lora[1], base[1])  # keys untouched
    torch.testing.assert_close(lora[2], base[2] + dv)


def test_vit_lora_layout():
    net = medsam_ft.build_network("samed", backbone="vit_tiny", num_classes=2, image_size=64)
    layer = net.lora_layers[0]
    dim = layer.qkv.in_features
    assert layer.q_rows.tolist() == list(range(dim)) and layer.v_rows.tolist() == list(range(2 * dim, 3 * dim))
    assert layer.lora_q_a.weight.shape == (4, dim) and layer.lora_q_b.weight.shape == (dim, 4)
    assert torch.count_nonzero(layer.lora_q_b.weight) == 0 and torch.count_nonzero(layer.lora_q_a.weight) > 0


def _as_float64(net):
    """The network in float64, except SAM's positional-encoding layer (it builds its grid in float32)."""
    net = net.double()
    net.prompt_encoder.pe_layer.float()
    return net


@pytest.mark.parametrize("backbone", ["vit_tiny", "lite_medsam"])
def test_merge_equals_unmerged(backbone):
    net = medsam_ft.build_network("samed", backbone=backbone, num_classes=4, image_size=64,
                                  method_options={"rank": 2, "alpha": 0.5})
    _randomise_lora(net, std=0.1)
    net = _as_float64(net).eval()
    merged = net.merge().eval()
    assert isinstance(merged, SemanticSAM) and not isinstance(merged, SAMed)
    assert not any(isinstance(m, LoRAQKV) for m in merged.modules())
    assert not any("lora" in k for k in merged.state_dict())
    assert any(isinstance(m, LoRAQKV) for m in net.modules())  # the original is left as it was
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        unmerged_logits, merged_logits = net(x), merged(x)
    assert (unmerged_logits - merged_logits).abs().max() < 1e-5
    # the merge is not a no-op: the LoRA update changes the output
    base = medsam_ft.build_network("decoder_only", backbone=backbone, num_classes=4, image_size=64)
    if backbone == "lite_medsam":
        with torch.no_grad():
            assert (_as_float64(base).eval()(x) - merged_logits).abs().max() > 1e-3


def test_trainable_state_round_trip(lite64):
    _, samed = lite64
    _randomise_lora(samed)
    with torch.no_grad():
        samed.mask_decoder.mask_tokens.weight.add_(0.1)
    state = samed.trainable_state_dict()
    fresh = medsam_ft.build_network("samed", backbone="lite_medsam", num_classes=9, image_size=64)
    fresh.load_trainable_state_dict(state)
    x = torch.rand(1, 3, 64, 64)
    samed.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), samed(x))
    other = medsam_ft.build_network("decoder_only", backbone="lite_medsam", num_classes=5, image_size=64)
    with pytest.raises(ValueError, match="does not match this decoder_only network"):
        other.load_trainable_state_dict(state, source="ckpt.pt")


def test_build_network_errors():
    with pytest.raises(ValueError, match="unknown method"):
        medsam_ft.build_network("nope", backbone="vit_tiny", num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        medsam_ft.build_network("decoder_only", backbone="vit_tiny", num_classes=1)


def test_build_reports_new_tensors(caplog):
    import logging

    with caplog.at_level(logging.INFO):
        medsam_ft.build_network("samed", backbone="vit_tiny", num_classes=3, image_size=64)
    assert "3 class mask tokens" in caplog.text and "LoRA rank 4 (alpha 1) on q and v of 3 attention blocks" in caplog.text


def test_checkpoint_file_rebuilds_the_network(tmp_path):
    from medsam_ft.checkpoint import TrainableCheckpoint, load_checkpoint
    from medsam_ft.io import InputError

    net = medsam_ft.build_network("samed", backbone="lite_medsam", num_classes=3, image_size=32)
    _randomise_lora(net)
    torch.save(TrainableCheckpoint(net, ["background", "a", "b"], [-125.0, 275.0]).state_dict(), tmp_path / "best.pt")
    loaded, checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["class_names"] == ["background", "a", "b"] and loaded.config == net.config
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt: not a medsam_ft checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(InputError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
