"""What the bundle configs compute, checked without training: the validation key metric."""

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

import medsam_ft

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
VOLUME_BUNDLES = ["samed_synapse", "gsam_synapse", "cad_synapse", "parser_synapse"]


@pytest.mark.parametrize("bundle", VOLUME_BUNDLES)
def test_validation_dice_penalises_organs_absent_from_the_case(bundle):
    """best.pt is chosen by this metric: predicting an organ the case does not have must cost Dice
    (MONAI's default skips organs absent from the ground truth, so false positives went unseen)."""
    parser = ConfigParser()
    parser.read_config(BUNDLES / bundle / "train.json")
    metric = parser.get_parsed_content("validation#key_metric#val_mean_dice")
    label = torch.zeros(1, 8, 8, 4, dtype=torch.long)
    label[0, 2:5, 2:5] = 1  # organ 1 present, organ 2 absent
    perfect = label.clone()
    false_positive = label.clone()
    false_positive[0, 6:8, 6:8] = 2  # organ 2 predicted where the case has none

    def score(prediction):
        onehot = [torch.nn.functional.one_hot(t[0], 3).permute(3, 0, 1, 2).float() for t in (prediction, label)]
        dice = metric.metric_fn  # the handler's per-iteration metric, as the evaluator calls it
        dice.reset()
        dice(y_pred=[onehot[0]], y=[onehot[1]])
        return float(dice.aggregate())

    assert score(perfect) == pytest.approx(1.0)
    assert score(false_positive) == pytest.approx(0.5)  # organ 1: 1, organ 2: 0


def _parser(bundle: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(BUNDLES / bundle / "train.json")
    for key, value in overrides.items():
        parser[key] = value
    return parser


def test_samed_synapse_builds_the_decoder_only_baseline(synapse_dataset):
    """The baseline on CT from the same bundle: --method decoder_only gets no LoRA rank."""
    net = _parser("samed_synapse", dataset_dir=str(synapse_dataset), method="decoder_only",
                  image_size=32).get_parsed_content("network_def")
    assert net.config["method"] == "decoder_only" and net.config["method_options"] == {}
    assert not any("lora" in k for k in net.trainable_state_dict())


@pytest.mark.parametrize("bundle,overrides", [("samed_synapse", {}), ("gsam_synapse", {"cnn": "resnet18"}),
                                              ("cad_synapse", {"stem": "strided", "adapter_size": 32})])
def test_seed_governs_network_initialisation(synapse_dataset, bundle, overrides):
    """--seed is set before anything is built: the same seed gives the same initial network, another
    seed another one (LoRA factors, adapters)."""

    def initial(seed: int) -> dict[str, torch.Tensor]:
        parser = _parser(bundle, dataset_dir=str(synapse_dataset), image_size=32, seed=seed, output_dir="/tmp/unused",
                         **overrides)
        parser.get_parsed_content("initialize")
        return parser.get_parsed_content("network_def").trainable_state_dict()

    first, again, other = initial(1), initial(1), initial(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_folder_2d_wires_gsam_like_gsam_isbi2012(tmp_path, shapes_dataset):
    """GSAM in folder_2d: crops cut from the resized image and the checkpoint's resize_to, so that
    evaluation slides its windows over the image at the training scale."""
    data = shapes_dataset(tmp_path / "shapes", "background,disc", count=4, seed=0, val_fraction=0.5)
    parser = ConfigParser()
    parser.read_config(BUNDLES / "folder_2d" / "train.json")
    parser.update({"dataset_dir": str(data), "method": "gsam", "method_options": {"cnn": "resnet18"},
                   "image_size": 64, "crop_size": 32})
    checkpoint = parser.get_parsed_content("checkpoint_state")
    assert checkpoint.resize_to == 64 and checkpoint.sliding_window == 32
    sample = parser.get_parsed_content("train_dataset")[0]
    assert sample["image"].shape == (3, 32, 32)  # a 32-px crop of the image resized to 64, fed as it is


VOLUME_KINDS = {b: "volume" for b in VOLUME_BUNDLES} | {b: "image" for b in ["cad_2d", "gsam_isbi2012", "folder_2d"]}
# Small versions of each bundle's recipe: every part is still built from the bundle's own config files
SMALL = {"image_size": 32, "batch_size": 2, "num_workers": 0, "cnn": "resnet18", "slice_batch_size": 8, "window_batch_size": 2}


def _read(*files: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / f) for f in files])
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("bundle,variant", [(b, None) for b in VOLUME_KINDS] + [("parser_synapse", "box")])
def test_every_bundle_builds_its_train_evaluate_and_inference_parts(bundle, variant, synapse_dataset, shapes_dataset,
                                                                    tmp_path, monkeypatch):
    """Each bundle's train, evaluate and inference configs, with the shared parts they pull in, build every
    engine part: a broken shared part fails here in seconds, before any bundle run."""
    monkeypatch.chdir(BUNDLES.parent)  # the configs name their shared parts from the repository root
    kind = VOLUME_KINDS[bundle]
    data = synapse_dataset if kind == "volume" else shapes_dataset(tmp_path / "shapes", "background,disc", count=4,
                                                                   seed=0, val_fraction=0.5)
    small = {k: v for k, v in SMALL.items() if k != "cnn" or "gsam" in bundle}
    train_files = [f"{bundle}/train.json"] + ([f"{bundle}/box_prompt.json"] if variant else [])
    train = _read(*train_files, dataset_dir=str(data), output_dir=str(tmp_path / "run"), **small)
    train.get_parsed_content("initialize")
    for part in ("network_def", "loss", "optimizer", "lr_scheduler", "train#trainer", "validate#evaluator"):
        assert train.get_parsed_content(part) is not None, part
    assert len(train.get_parsed_content("train_dataset")) > 0
    checkpoint = tmp_path / "best.pt"
    torch.save({"model": train.get_parsed_content("checkpoint_state").state_dict()}, checkpoint)

    evaluate_files = [f"{bundle}/evaluate.json"] + ([f"{bundle}/evaluate_box.json"] if variant else [])
    evaluate = _read(*evaluate_files, dataset_dir=str(data), checkpoint=str(checkpoint), split="validation",
                     output_dir=str(tmp_path / "eval"), **{k: v for k, v in small.items() if k != "image_size"})
    evaluate.get_parsed_content("initialize")
    assert len(evaluate.get_parsed_content("evaluate#evaluator").data_loader) > 0

    inputs = data / ("img" if kind == "volume" else "images")
    inference = _read(f"{bundle}/inference.json", checkpoint=str(checkpoint), input_dir=str(inputs),
                      output_dir=str(tmp_path / "predictions"))
    if variant == "box":  # a box-prompted network predicts only with boxes: no whole-volume inference
        with pytest.raises(RuntimeError) as refused:
            inference.get_parsed_content("inference#predictor")
        assert "trained with box prompts" in str(refused.value.__cause__)
    elif kind == "volume":
        predictor = inference.get_parsed_content("inference#predictor")
        assert predictor.class_names == train.get_parsed_content("dataset").class_names
        assert len(inference.get_parsed_content("inference#scans")) > 0
    else:
        assert len(inference.get_parsed_content("inference#evaluator").data_loader) > 0


@pytest.mark.parametrize("bundle", list(VOLUME_KINDS))
def test_every_bundle_reads_with_the_multi_gpu_part(bundle, monkeypatch):
    """multi_gpu_train.json beside every bundle merges with its train.json (the DDP run itself: test_bundle.py)."""
    monkeypatch.chdir(BUNDLES.parent)
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "train.json"), str(BUNDLES / bundle / "multi_gpu_train.json")])
    parser.parse()
    assert parser["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert parser["run"][0] == "$medsam_ft.distributed.check_data_parallel(@network)"


def test_bundles_refuse_a_vit_backbone_without_weights(synapse_dataset, tmp_path, monkeypatch):
    """--backbone vit_* without --sam_checkpoint would train from random weights: refused unless
    --random_init True is given."""
    monkeypatch.chdir(BUNDLES.parent)
    overrides = dict(dataset_dir=str(synapse_dataset), output_dir=str(tmp_path), backbone="vit_tiny", image_size=32)
    with pytest.raises(RuntimeError) as refused:
        _parser("samed_synapse", **overrides).get_parsed_content("initialize")
    assert "--backbone vit_tiny needs its SAM weights" in str(refused.value.__cause__)
    _parser("samed_synapse", random_init=True, **overrides).get_parsed_content("initialize")


@pytest.mark.parametrize("bundle", list(VOLUME_KINDS))
def test_metadata_states_this_version_and_numbers_only(bundle):
    """metadata.json (what MONAI's tools read): this medsam-ft's version, numeric eval_metrics (or none),
    and an output of class scores with one channel per class the bundle's docs name."""
    meta = json.loads((BUNDLES / bundle / "metadata.json").read_text())
    # the mandatory keys of MONAI's bundle specification (docs: mb_specification, "metadata.json File")
    assert {"version", "monai_version", "pytorch_version", "numpy_version", "optional_packages_version", "task",
            "description", "authors", "copyright", "network_data_format"} <= set(meta)
    for tensor in [*meta["network_data_format"]["inputs"].values(), *meta["network_data_format"]["outputs"].values()]:
        assert {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                "channel_def"} <= set(tensor)
    assert meta["required_packages_version"]["medsam-ft"] == medsam_ft.__version__ == meta["version"]
    assert all(isinstance(v, (int, float)) for v in meta["eval_metrics"].values())
    output = next(iter(meta["network_data_format"]["outputs"].values()))
    assert "logits" in output["description"] and output["format"] == "labels"  # C class channels, argmax = label
    if isinstance(output["num_channels"], int):  # folder_2d: C comes from the data set
        assert len(output["channel_def"]) == output["num_channels"]
