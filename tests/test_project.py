import re
import subprocess
import sys
from pathlib import Path

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
