"""What the abdominal organs are called in DICOM and 3D Slicer: SNOMED CT codes and standard colours.

Class names are matched by their words, whatever the order, case or separator: ``right_kidney``,
``Kidney right`` and ``kidney-right`` are the same organ. Codes are SNOMED CT (scheme ``SCT``) as
in the DICOM code dictionary (``pydicom.sr.codedict``); a side is a modifier of the organ's code, as
3D Slicer's "General Anatomy" terminology stores it. Colours are Slicer's GenericAnatomyColors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Code = tuple[str, str, str]  # (value, scheme designator, meaning)

ANATOMICAL_STRUCTURE: Code = ("123037004", "SCT", "Anatomical Structure")
TISSUE: Code = ("85756007", "SCT", "Tissue")
RIGHT: Code = ("24028007", "SCT", "Right")
LEFT: Code = ("7771000", "SCT", "Left")
SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"


@dataclass(frozen=True)
class Organ:
    """An organ's coded type (+ side) and display colour."""

    code: Code
    color: tuple[int, int, int]
    side: Code | None = None


def _organ(value: str, meaning: str, color: tuple[int, int, int], side: Code | None = None) -> Organ:
    return Organ((value, "SCT", meaning), color, side)


ORGANS: dict[str, Organ] = {
    "spleen": _organ("78961009", "Spleen", (157, 108, 162)),
    "right kidney": _organ("64033007", "Kidney", (185, 102, 83), RIGHT),
    "left kidney": _organ("64033007", "Kidney", (185, 102, 83), LEFT),
    "gallbladder": _organ("28231008", "Gallbladder", (139, 150, 98)),
    "esophagus": _organ("32849002", "Esophagus", (211, 171, 143)),
    "liver": _organ("10200004", "Liver", (221, 130, 101)),
    "stomach": _organ("69695003", "Stomach", (216, 132, 105)),
    "aorta": _organ("15825003", "Aorta", (224, 97, 76)),
    "inferior vena cava": _organ("64131007", "Inferior vena cava", (0, 151, 206)),
    "portal vein": _organ("32764006", "Portal vein", (0, 151, 206)),
    "pancreas": _organ("15776009", "Pancreas", (249, 180, 111)),
    "right adrenal gland": _organ("23451007", "Adrenal gland", (249, 186, 150), RIGHT),
    "left adrenal gland": _organ("23451007", "Adrenal gland", (249, 186, 150), LEFT),
    "duodenum": _organ("38848004", "Duodenum", (255, 253, 229)),
    "urinary bladder": _organ("89837001", "Bladder", (222, 154, 132)),
}


def _words(name: str) -> frozenset[str]:
    return frozenset(w for w in re.split(r"[^a-z0-9]+", name.lower()) if w)


_BY_WORDS = {_words(name): organ for name, organ in ORGANS.items()}


def organ(class_name: str) -> Organ | None:
    """The organ a class name denotes.

    Args:
        class_name: e.g. ``right_kidney`` (case, spaces and underscores ignored).

    Returns:
        The :class:`Organ` (code, side, colour), or None if unknown.
    """
    return _BY_WORDS.get(_words(class_name))
