import re
import subprocess
import sys
from pathlib import Path

import medsam_ft
from medsam_ft.arguments import add_option, argument_parser

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    test_command = next(c.strip() for c in commands if "test" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_cli_info_lists_backbones_and_methods():
    out = subprocess.run([sys.executable, "-m", "medsam_ft.cli", "info"], capture_output=True, text=True, check=True)
    assert "lite_medsam" in out.stdout and "samed" in out.stdout and "decoder_only" in out.stdout


def test_readme_snippet_builds_offline():
    code = "import medsam_ft; print(medsam_ft.build_network('samed', backbone='lite_medsam', num_classes=9))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert "SAMed" in out.stdout and "LoRAQKV" in out.stdout


def _run(*args: str) -> str:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_command_lines_share_one_spelling_and_show_defaults():
    """--version, defaults in --help, -i/-o for predict; options spelled with underscores as the
    bundles' overrides (the dashed spelling still accepted, unlisted)."""
    assert _run("-m", "medsam_ft.cli", "--version").strip() == f"medsam-ft {medsam_ft.__version__}"
    predict_help = _run("-m", "medsam_ft.cli", "predict", "--help")
    assert "-i INPUT, --input INPUT" in predict_help and "-o OUTPUT, --output OUTPUT" in predict_help
    assert "--dicom_seg" in predict_help and "--dicom-seg" not in predict_help
    assert "(default: 32)" in predict_help
    converter_help = _run("-m", "data_prep.synapse", "--help")
    assert converter_help.startswith("usage: python -m data_prep.synapse") and "--val_cases" in converter_help
    assert "(default: 2)" in converter_help
    parser = argument_parser("tool", "test")
    add_option(parser, "val_cases", type=int, default=2)
    assert parser.parse_args(["--val-cases", "5"]).val_cases == 5
    assert parser.parse_args(["--val_cases", "4"]).val_cases == 4 and parser.parse_args([]).val_cases == 2
