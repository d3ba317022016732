"""Writing predictions: 3D Slicer segmentations and colour tables, DICOM SEG, overlay montages of volumes;
2D label PNGs with overlays. (Label NIfTI volumes: :func:`medsam_ft.predict.predict_scans`.)"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import slicerio
import torch
from monai.transforms import MapTransform
from PIL import Image, ImageDraw
from pydicom.sr.codedict import codes
from scipy import ndimage

import medsam_ft
from medsam_ft.anatomy import ANATOMICAL_STRUCTURE, SLICER_CONTEXT, TISSUE, organ
from medsam_ft.data.folder2d import IMAGE_SUFFIXES
from medsam_ft.io import InputError, atomic_path, files_by_stem, write_json
from medsam_ft.scans import LPS_TO_RAS
from medsam_ft.transforms import three_channels


def list_images(input_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The 2D images of a folder to predict (volumes: :func:`medsam_ft.scans.find_scans`).

    Args:
        input_dir: the folder; files other than png, jpg, tif, bmp are ignored.

    Returns:
        ``[{"image": path}]``, sorted.

    Raises:
        InputError: no such folder, or no image in it.
    """
    files = files_by_stem(input_dir, IMAGE_SUFFIXES)
    if not files:
        raise InputError(input_dir, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [{"image": str(p)} for p in files.values()]


def label_colors(class_names: Sequence[str], class_colors: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """A colour per class.

    Args:
        class_names: C names, background first.
        class_colors: a data set's palette ([r, g, b] per class), used when given.

    Returns:
        uint8[C, 3]: the palette; else black background, 3D Slicer's standard colour for each known
        organ (:mod:`medsam_ft.anatomy`), well-separated hues (golden-ratio steps) for the other classes.
    """
    if class_colors is not None:
        if len(class_colors) != len(class_names):
            raise ValueError(f"{len(class_colors)} class colours for {len(class_names)} classes")
        return np.asarray(class_colors, dtype=np.uint8)
    colors = [(0, 0, 0)]
    for c, name in enumerate(class_names[1:], start=1):
        known = organ(name)
        hue = colorsys.hsv_to_rgb((0.1 + c * 0.618034) % 1.0, 0.8, 1.0)
        colors.append(known.color if known else tuple(round(v * 255) for v in hue))
    return np.asarray(colors, dtype=np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


class SaveLabelPNGd(MapTransform):
    """Write 2D predictions ``data[key]`` (class ids [1, H, W] at the input's size) as PNG files.

    ``{output_dir}/{stem}_{postfix}.png``: uint8 class ids (the masks' ``ids`` format);
    ``{stem}_overlay.png``: the input image with the classes drawn in colour (half opacity,
    background left clear), for looking at. ``{output_dir}/labels.json`` names each id and its colour.
    Files are written atomically.

    Args:
        keys: the prediction entry.
        output_dir: where the files go.
        class_names: C names, background first.
        class_colors: [r, g, b] per class (None: :func:`label_colors`).
        postfix: the label file's suffix.
        image_key: the input image entry (for the overlay and the stem).
        info: what ``labels.json`` records beside the classes (checkpoint, config).
    """

    def __init__(self, keys: str, output_dir: str | os.PathLike, class_names: Sequence[str],
                 class_colors: Sequence[Sequence[int]] | None = None, postfix: str = "seg", image_key: str = "image",
                 info: Mapping[str, Any] | None = None):
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.colors = label_colors(self.class_names, class_colors)
        self.postfix, self.image_key = postfix, image_key
        self.info = dict(info or {})
        self.labels_written = False

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.labels_written:
            write_json(self.output_dir / "labels.json", {
                "labels": {str(i): {"name": n, "color": self.colors[i].tolist()} for i, n in enumerate(self.class_names)},
                "medsam_ft_version": medsam_ft.__version__, **self.info})
            self.labels_written = True
        for key in self.key_iterator(d):
            pred = d[key]
            source = str(pred.meta["filename_or_obj"])
            labels = torch.as_tensor(pred)[0].cpu().numpy().round().astype(np.uint8)
            image = three_channels(torch.as_tensor(d[self.image_key]).float().cpu()).numpy().transpose(1, 2, 0)
            if labels.shape != image.shape[:2]:
                raise RuntimeError(f"{source}: prediction size {labels.shape} differs from the image's {image.shape[:2]}")
            stem = Path(source).stem
            _write_png(self.output_dir / f"{stem}_{self.postfix}.png", labels)
            overlay = np.round(np.clip(image, 0.0, 1.0) * 255.0)
            drawn = labels > 0
            overlay[drawn] = 0.5 * overlay[drawn] + 0.5 * self.colors[labels[drawn]]
            _write_png(self.output_dir / f"{stem}_overlay.png", overlay.round().astype(np.uint8))
            d[f"{key}_file"] = str(self.output_dir / f"{stem}_{self.postfix}.png")
        return d


def _terminology(name: str) -> str:
    """3D Slicer's ``TerminologyEntry`` for a class: its organ code (and side) when known, else "Tissue"."""
    known = organ(name)
    if known is None:
        category = kind = TISSUE
    else:
        category, kind = ANATOMICAL_STRUCTURE, known.code
    side = known.side if known is not None and known.side is not None else ("", "", "")

    def code(c: tuple[str, str, str]) -> str:
        return f"{c[1]}^{c[0]}^{c[2]}" if c[0] else "^^"

    return f"{SLICER_CONTEXT}~{code(category)}~{code(kind)}~{code(side)}~Anatomic codes - DICOM master list~^^~^^"


def write_seg_nrrd(path: str | os.PathLike, labels: np.ndarray, affine: np.ndarray, class_names: Sequence[str],
                   colors: np.ndarray) -> None:
    """Write a 3D Slicer segmentation file (``.seg.nrrd``) with ``slicerio``.

    Args:
        path: the file to write.
        labels: uint8[I, J, K] class ids on the scan's grid.
        affine: float[4, 4] voxel -> RAS mm (written as Slicer's LPS space directions and origin).
        class_names: C names, background first; one segment per class but background, with the
            class's terminology entry (organ code and side, else "Tissue"), colour and extent.
        colors: uint8[C, 3] colour per class.
    """
    ijk_to_lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    boxes = ndimage.find_objects(labels, max_label=len(class_names) - 1)
    segments = []
    for value, name in list(enumerate(class_names))[1:]:
        box = boxes[value - 1]
        segments.append({
            "id": f"Segment_{value}", "name": name, "nameAutoGenerated": False,
            "color": [round(c / 255, 6) for c in colors[value]], "colorAutoGenerated": False,
            "labelValue": value, "layer": 0,
            "extent": [v for s in box for v in (s.start, s.stop - 1)] if box is not None else [0, -1, 0, -1, 0, -1],
            "tags": {"TerminologyEntry": _terminology(name)},
        })
    slicerio.write_segmentation(str(path), {
        "voxels": np.asarray(labels, dtype=np.uint8), "ijkToLPS": ijk_to_lps, "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0], "encoding": "gzip",
    })


def write_color_table(path: str | os.PathLike, class_names: Sequence[str], colors: np.ndarray) -> None:
    """Write a 3D Slicer colour table (``.ctbl``: ``value name r g b a`` per line) for the plain label volume.

    Args:
        path: the file.
        class_names: C names, background first (spaces become underscores).
        colors: uint8[C, 3]; background is written transparent.
    """
    lines = ["# Color table file written by medsam_ft", f"# {len(class_names)} values"]
    for value, name in enumerate(class_names):
        r, g, b = (int(c) for c in colors[value])
        lines.append(f"{value} {'_'.join(name.split())} {r} {g} {b} {0 if value == 0 else 255}")
    Path(path).write_text("\n".join(lines) + "\n")


def referenceable(dataset: pydicom.Dataset, path: str | os.PathLike) -> pydicom.Dataset:
    """A source image as scanners and anonymisers write it, made what a SEG can reference.

    - SOP Class / Instance UID missing or empty in the data set: taken from the file meta information
      (Media Storage SOP Class / Instance UID), which holds the same values by the standard (PS3.10 7.1);
    - an empty Specific Character Set: removed (absent = the default repertoire, PS3.3 C.12.1.1.2).

    Args:
        dataset: the source image as read.
        path: its file, for errors.

    Returns:
        The data set, completed in place.

    Raises:
        InputError: a UID that neither the data set nor the file meta holds (nothing to reference).
    """
    meta = getattr(dataset, "file_meta", None)
    for keyword, meta_keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                  ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if not str(dataset.get(keyword, "") or "").strip():
            value = str(getattr(meta, meta_keyword, "") or "").strip() if meta is not None else ""
            if not value:
                raise InputError(path, f"has no {keyword} (nor {meta_keyword} in its file meta): a DICOM SEG "
                                       "cannot reference it")
            setattr(dataset, keyword, value)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if not str(dataset.get(keyword, "") or "").strip():
            raise InputError(path, f"has no {keyword}: a DICOM SEG cannot reference its series")
    charset = dataset.get("SpecificCharacterSet")
    if charset is not None and not any(str(c).strip() for c in (charset if isinstance(charset, list) else [charset])):
        del dataset.SpecificCharacterSet
    return dataset


def write_dicom_seg(path: str | os.PathLike, labels: np.ndarray, source_files: Sequence[os.PathLike],
                    class_names: Sequence[str], colors: np.ndarray, algorithm_name: str) -> None:
    """Write a DICOM Segmentation (highdicom, binary) referencing its source series.

    Args:
        path: the file.
        labels: uint8[X, Y, K] class ids; slice k belongs to ``source_files[k]``.
        source_files: the series' files in slice order.
        class_names: C names, background first; one segment per other class, coded with its SNOMED
            CT organ (and side) when known (else "Tissue").
        colors: uint8[C, 3].
        algorithm_name: the automatic algorithm's name in the segments.

    Raises:
        InputError: a source file a SEG cannot reference (see :func:`referenceable`).
    """
    sources = []
    for file in source_files:
        try:
            sources.append(referenceable(pydicom.dcmread(file, stop_before_pixels=True), file))
        except InputError:
            raise
        except Exception as err:  # pydicom raises many types for unreadable files
            raise InputError(file, f"not a readable DICOM file ({type(err).__name__}: {err})") from None
    if len(sources) != labels.shape[2]:
        raise RuntimeError(f"{len(sources)} source files for {labels.shape[2]} slices")
    algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name, family=codes.cid7162.ArtificialIntelligence,
                                                   version=medsam_ft.__version__)
    descriptions = []
    for value, name in list(enumerate(class_names))[1:]:
        known = organ(name)
        category, kind = (ANATOMICAL_STRUCTURE, known.code) if known else (TISSUE, TISSUE)
        description = hd.seg.SegmentDescription(
            segment_number=value, segment_label=name, segmented_property_category=hd.sr.CodedConcept(*category),
            segmented_property_type=hd.sr.CodedConcept(*kind), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=name,
            display_color=hd.color.CIELabColor.from_rgb(*(int(c) for c in colors[value])))
        if known is not None and known.side is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(*known.side)]
        descriptions.append(description)
    try:
        segmentation = hd.seg.Segmentation(
            source_images=sources, pixel_array=np.ascontiguousarray(labels.transpose(2, 1, 0)),  # [K, rows J, cols I]
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medsam_ft",
            manufacturer_model_name=algorithm_name, software_versions=medsam_ft.__version__, device_serial_number="none",
            series_description=f"{algorithm_name} segmentation", omit_empty_frames=bool(labels.any()))
    except (AttributeError, ValueError, TypeError) as err:  # highdicom's checks of the source images' attributes
        raise InputError(Path(source_files[0]).parent, f"cannot make a DICOM SEG of this series: {err}") from None
    segmentation.save_as(path)


def _tile(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, spacing: Sequence[float], size: int) -> Image.Image:
    """One axial slice (image float[X, Y] in [0, 1], labels [X, Y], RAS) as radiologists view it (patient's
    right on the left, anterior up), ``size`` px on its long side at the true aspect ratio, with every
    class outlined in its colour."""
    image, labels = image[::-1, ::-1].T, labels[::-1, ::-1].T  # rows: anterior -> posterior; columns: right -> left
    height, width = labels.shape[0] * spacing[1], labels.shape[1] * spacing[0]
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).resize(shape, Image.BILINEAR)
    ids = np.asarray(Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8)).resize(shape, Image.NEAREST))
    padded = np.pad(ids, 1, mode="edge")
    edge = (ids > 0) & ((padded[:-2, 1:-1] != ids) | (padded[2:, 1:-1] != ids)
                        | (padded[1:-1, :-2] != ids) | (padded[1:-1, 2:] != ids))
    rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=2)
    rgb[edge] = colors[ids[edge]]
    return Image.fromarray(rgb)


def write_overlay_montage(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                          colors: np.ndarray, spacing: Sequence[float], slices_per_class: int = 3,
                          tile_size: int = 192) -> None:
    """Write a PNG for a quick look: per predicted class a row of axial slices, prediction outlined.

    Args:
        path: the file.
        image: float[X, Y, Z] in [0, 1], oriented RAS.
        labels: [X, Y, Z] class ids, oriented RAS.
        class_names: C names, background first.
        colors: uint8[C, 3].
        spacing: mm along X and Y (tiles keep the aspect).
        slices_per_class: slices per row, spread over the slices holding the class (no class
            predicted: one row across the volume).
        tile_size: each slice's side in pixels.
    """
    depth = labels.shape[2]
    present = labels.reshape(-1, depth)
    rows = []
    for value, name in list(enumerate(class_names))[1:]:
        slices = np.flatnonzero((present == value).any(axis=0))
        if slices.size:
            picks = np.unique(slices[np.round(np.linspace(0.2, 0.8, slices_per_class) * (slices.size - 1)).astype(int)])
            rows.append((name, colors[value], picks))
    if not rows:
        rows = [("no class predicted", np.array([255, 255, 255]),
                 np.unique(np.round(np.linspace(0.2, 0.8, slices_per_class) * (depth - 1)).astype(int)))]
    montage = Image.new("RGB", (slices_per_class * tile_size, len(rows) * tile_size))
    draw = ImageDraw.Draw(montage)
    for r, (name, color, picks) in enumerate(rows):
        for c, z in enumerate(picks):
            tile = _tile(image[:, :, z], labels[:, :, z], colors, spacing, tile_size)
            montage.paste(tile, (c * tile_size + (tile_size - tile.width) // 2, r * tile_size + (tile_size - tile.height) // 2))
            draw.text((c * tile_size + 4, r * tile_size + tile_size - 14), f"slice {z}", fill=(255, 255, 255))
        draw.text((4, r * tile_size + 4), name, fill=tuple(int(v) for v in color))
    montage.save(path, format="PNG")
