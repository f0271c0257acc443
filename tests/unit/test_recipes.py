"""Image recipes: the shipped ones load, and every malformed one is refused with file, line and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import UserError
from lab.image import recipes
from lab.paths import IMAGES

GOOD = """\
name: tiny
suite: bookworm
variant: apt
packages: [python3, kmod]
size_mb: 256
"""


def write(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_shipped_recipes_load() -> None:
    for path in sorted(IMAGES.glob("*.yaml")):
        recipe = recipes.load_recipe(path)
        assert recipe.name == path.stem
        assert "python3" in recipe.packages


def test_minimal_recipe_defaults(tmp_path: Path) -> None:
    recipe = recipes.load_recipe(write(tmp_path, GOOD))
    assert recipe.packages == ("python3", "kmod")
    assert recipe.size_mb == 256
    assert recipe.components == ("main",)
    assert recipe.mirror == ""  # the host's own Debian archive, looked up when the image is built
    assert recipe.exclude == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "pkgs: [x]\n", r"tiny.yaml:6: unknown key 'pkgs'; known keys: name, suite"),
        (GOOD.replace("size_mb: 256\n", ""), r"missing key: size_mb; add them"),
        (GOOD.replace("size_mb: 256", "size_mb: big"), r"tiny.yaml:5: size_mb is 'big'; it must be a positive integer"),
        (GOOD.replace("size_mb: 256", "size_mb: 0"), r"tiny.yaml:5: size_mb is 0"),
        (GOOD.replace("size_mb: 256", "size_mb: true"), r"tiny.yaml:5: size_mb is True"),
        (GOOD.replace("[python3, kmod]", "python3"), r"tiny.yaml:4: packages is 'python3'; it must be a list"),
        (GOOD.replace("[python3, kmod]", "[Python 3]"), r"tiny.yaml:4: packages"),
        (GOOD.replace("variant: apt", "variant: fat"), r"tiny.yaml:3: variant is 'fat'; it must be one of: essential"),
        (GOOD.replace("suite: bookworm", "suite: 12"), r"tiny.yaml:2: suite is 12"),
        (GOOD + "mirror: ftp://x\n", r"tiny.yaml:6: mirror is 'ftp://x'; it must be an http\(s\) URL"),
        (GOOD + "components: []\n", r"tiny.yaml:6: components is \[\]"),
        (GOOD + "exclude: [usr/share/doc]\n", r"tiny.yaml:6: exclude .* absolute path globs"),
        (GOOD.replace("name: tiny", "name: other"), r"tiny.yaml:1: name 'other' differs from the file name; rename"),
        (GOOD + "packages: [\n", r"tiny.yaml:\d+: invalid YAML .*fix the syntax"),
        (GOOD + "  bad: indent\n", r"tiny.yaml:\d+: invalid YAML"),
        ("- a\n- b\n", r"tiny.yaml: an image recipe must be a mapping"),
        ("", r"tiny.yaml: an image recipe must be a mapping"),
    ],
)
def test_validation_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        recipes.load_recipe(write(tmp_path, text))


def test_unreadable_recipe(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read image recipe"):
        recipes.load_recipe(tmp_path / "absent.yaml")


def test_find_recipe_by_name_and_path(tmp_path: Path) -> None:
    assert recipes.find_recipe("debian-bookworm") == IMAGES / "debian-bookworm.yaml"
    path = write(tmp_path, GOOD)
    assert recipes.find_recipe(str(path)) == path


def test_find_recipe_unknown_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown image recipe 'nope'; choose one of: .*debian-bookworm"):
        recipes.find_recipe("nope")
    with pytest.raises(UserError, match="does not exist"):
        recipes.find_recipe(str(tmp_path / "nope.yaml"))
