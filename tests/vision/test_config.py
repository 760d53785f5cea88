from pathlib import Path

import pytest

from vision.config import load_experiment
from vision.errors import ConfigError
from vision.overrides import apply_overrides

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


BASE = {"data": {"source": "folder", "root": "x"}, "model": {"architecture": "tiny_cnn", "name": "m"}}


def _with(section: str, key: str, value: object) -> dict:
    import copy

    raw = copy.deepcopy(BASE)
    raw.setdefault(section, {})[key] = value
    return raw


@pytest.mark.parametrize("size", [[0, 0], [-4, 32], [100000, 100000], [64, 4097]])
def test_input_and_work_sizes_are_bounded(size: list[int]) -> None:
    """A size no model can have used to train, export and register with metadata that
    disagreed with its graph; now the recipe is refused, saying what is allowed."""
    from vision.config import validate_experiment
    from vision.contracts.model import MAX_INPUT_SIDE

    for key in ("input_size", "work_size"):
        with pytest.raises(ConfigError, match=rf"model\.{key}: .*each side must be 1\.\.{MAX_INPUT_SIDE}"):
            validate_experiment(_with("model", key, size))
    assert validate_experiment(_with("model", "input_size", [1, MAX_INPUT_SIDE])).model.input_size == (1, 4096)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("train", "lr", float("inf")), ("train", "lr", float("nan")), ("train", "weight_decay", float("inf")),
    ("train", "warmup_epochs", float("inf")), ("model", "dropout", float("nan")),
    ("calibration", "targets", {"a": {"recall": float("nan")}}),
])
def test_numbers_must_be_finite(section: str, key: str, value: object) -> None:
    from vision.config import validate_experiment

    with pytest.raises(ConfigError, match="finite number"):
        validate_experiment(_with(section, key, value))


def test_yaml_infinity_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("data: {source: folder, root: x}\nmodel: {architecture: tiny_cnn, name: m}\ntrain: {lr: .inf}\n")
    with pytest.raises(ConfigError, match=r"train\.lr: must be a finite number"):
        load_experiment(p)


def test_band_indices_are_not_negative() -> None:
    from vision.config import validate_experiment

    with pytest.raises(ConfigError, match=r"data\.bands: band indices are 0-based and not negative: \[-1\]"):
        validate_experiment(_with("data", "bands", [0, -1]))
    with pytest.raises(ConfigError, match="twice"):
        validate_experiment(_with("data", "bands", [1, 1]))
    assert validate_experiment(_with("data", "bands", [3, 2, 1])).data.bands == [3, 2, 1]


def test_typos_suggest_the_closest_key_and_architectures_are_checked(tmp_path: Path) -> None:
    from vision.config import validate_experiment

    with pytest.raises(ConfigError, match=r"train\.epocs: unknown key \(did you mean `train\.epochs`\?\)"):
        validate_experiment(_with("train", "epocs", 3))
    with pytest.raises(ConfigError, match=r"did you mean `calibration`"):
        validate_experiment({**BASE, "calibraton": {}})
    with pytest.raises(ConfigError, match=r"model\.architecture: unknown architecture 'resnet19' "
                                          r"\(did you mean 'resnet18'\?\)"):
        validate_experiment(_with("model", "architecture", "resnet19"))


def test_weights_must_be_a_loadable_state_dict(tmp_path: Path) -> None:
    """`model.weights: /etc/passwd` ended in a raw UnpicklingError after the data was read."""
    import torch

    from vision.config import check_resources, validate_experiment
    from vision.models import get_model

    def check(weights: str) -> None:
        check_resources(validate_experiment(_with("model", "weights", weights)))

    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"a": 1}, tmp_path / "nothing.pt")
    for path, why in ((passwd, "not a state_dict torch.load"), (tmp_path / "missing.pt", "no such file"),
                      (tmp_path, "not a file"), (tmp_path / "list.pt", "not a state_dict"),
                      (tmp_path / "nothing.pt", "not a state_dict")):
        with pytest.raises(ConfigError, match=why) as info:
            check(str(path))
        assert str(path) in str(info.value)
    good = tmp_path / "w.pt"
    torch.save(get_model("tiny_cnn", 4, 3, "none").state_dict(), good)
    check(str(good))
    check("none")
