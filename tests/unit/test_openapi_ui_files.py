"""The browsable API page's vendored files are where the service reads them, with their licence, and the wheel
takes them along (hatch packs every file of the listed packages that git does not ignore)."""

import json
import subprocess
import tomllib
from pathlib import Path

from services.shared.openapi_ui.pages import ASSETS, SWAGGER_UI_VERSION

ROOT = Path(__file__).parents[2]
DIST = ROOT / "services" / "shared" / "openapi_ui" / "swagger-ui"


def test_every_served_file_is_there_with_the_licence() -> None:
    for name in [*ASSETS, "LICENSE", "NOTICE", "SOURCE.md", "package.json"]:
        assert (DIST / name).is_file(), name
    assert "Apache License" in (DIST / "LICENSE").read_text()
    assert json.loads((DIST / "package.json").read_text())["version"] == SWAGGER_UI_VERSION
    assert SWAGGER_UI_VERSION in (DIST / "SOURCE.md").read_text()


def test_the_wheel_takes_the_files_along() -> None:
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "services" in wheel["packages"]
    assert not {"exclude", "only-include", "artifacts"} & set(wheel), "check that the UI files still go in"
    names = [str(DIST.relative_to(ROOT) / name) for name in ASSETS]
    ignored = subprocess.run(["git", "check-ignore", *names], cwd=ROOT, capture_output=True, text=True).stdout
    assert ignored == "", f"git ignores (so hatch leaves out): {ignored}"
