"""medsam-ft export: TorchScript and ONNX files that reproduce the trained network."""

import numpy as np
import onnxruntime
import pytest
import torch

import medsam_ft
import medsam_ft.export
from medsam_ft.checkpoint import TrainableCheckpoint
from medsam_ft.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SAMed checkpoint whose LoRA update is not zero (so merging matters)."""
    torch.manual_seed(0)
    network = medsam_ft.build_network("samed", backbone="lite_medsam", num_classes=3, image_size=32)
    with torch.no_grad():
        for layer in network.lora_layers:
            layer.lora_q_b.weight.normal_(std=0.05)
            layer.lora_v_b.weight.normal_(std=0.05)
    path = tmp_path_factory.mktemp("export") / "best.pt"
    torch.save(TrainableCheckpoint(network, ["background", "a", "b"]).state_dict(), path)
    return network.eval(), path


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".ts"), ("onnx", ".onnx")])
def test_export_reproduces_the_trained_network(trained, tmp_path, fmt, suffix):
    network, checkpoint = trained
    out = tmp_path / f"model{suffix}"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "-o", str(out), "--batch_size", "2"]) == 0
    image = torch.rand(2, 3, 32, 32)  # a fresh input, read back with each runtime's own loader
    with torch.no_grad():
        expected = network(image).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(image).detach().numpy()
    else:
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": image.numpy()})[0]
    assert got.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(got, expected, atol=medsam_ft.export.TOLERANCE)


def test_export_that_differs_from_pytorch_writes_nothing(trained, tmp_path, monkeypatch):
    network, _ = trained
    monkeypatch.setattr(medsam_ft.export, "TOLERANCE", -1.0)  # no file can pass
    with pytest.raises(ValueError, match="away from PyTorch's"):
        medsam_ft.export.export_network(network, tmp_path / "model.ts", "torchscript")
    assert not list(tmp_path.iterdir())
    box = medsam_ft.build_network("decoder_only", backbone="lite_medsam", num_classes=2, image_size=32, prompt="box")
    with pytest.raises(ValueError, match="box-prompted"):
        medsam_ft.export.export_network(box, tmp_path / "box.ts", "torchscript")


def test_gsam_onnx_takes_any_image_size(tmp_path):
    """GSAM takes any H x W: its ONNX file has dynamic height and width (multiples of 16)."""
    torch.manual_seed(0)
    network = medsam_ft.build_network("gsam", backbone="lite_medsam", num_classes=2, image_size=32,
                                      method_options={"cnn": "resnet18"}).eval()
    report = medsam_ft.export.export_network(network, tmp_path / "gsam.onnx", "onnx")
    assert report.input_shape == (1, 3, "16*h", "16*w")
    session = onnxruntime.InferenceSession(str(tmp_path / "gsam.onnx"), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 48, 80)
    with torch.no_grad():
        expected = network(image).numpy()
    got = session.run(None, {"image": image.numpy()})[0]
    assert got.shape == expected.shape == (1, 2, 48, 80)
    np.testing.assert_allclose(got, expected, atol=medsam_ft.export.TOLERANCE)
