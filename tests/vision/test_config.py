from pathlib import Path

import pytest

from vision.config import apply_overrides, load_experiment
from vision.errors import ConfigError

RECIPES = sorted((Path(__file__).parents[2] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_shipped_recipe_validates(recipe: Path) -> None:
    cfg = load_experiment(recipe)
    assert cfg.model.name


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("data: {source: folder, root: x}\nmodel: {architecture: resnet18, name: m, wieghts: none}\n")
    with pytest.raises(ConfigError, match="wieghts"):
        load_experiment(p)


def test_unknown_augmentation_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("data: {source: folder, root: x}\nmodel: {architecture: resnet18, name: m}\n"
                 "augmentations: [{name: NotATransform}]\n")
    with pytest.raises(ConfigError, match="NotATransform"):
        load_experiment(p)


def test_set_overrides_parse_yaml_scalars() -> None:
    raw = {"model": {"weights": "imagenet"}, "train": {"epochs": 8}}
    out = apply_overrides(raw, ["model.weights=none", "train.epochs=2", "train.lr=0.001"])
    assert out == {"model": {"weights": "none"}, "train": {"epochs": 2, "lr": 0.001}}
    assert raw["train"]["epochs"] == 8  # original untouched
    with pytest.raises(ConfigError):
        apply_overrides(raw, ["novalue"])
