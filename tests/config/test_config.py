"""The config rules: _base_ inheritance, _delete_, overrides, registries and their errors."""

import pytest
import yaml

from densenets.config import (
    ConfigError,
    ConfigNode,
    Registry,
    build,
    dump_config,
    load_config,
    parse_value,
)
from densenets.config import registry as registry_mod


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def toy_registry(monkeypatch):
    reg = Registry("toy")

    @reg.register()
    class Backbone:
        def __init__(self, depth: int, width: int = 64, norm: str = "BN"):
            self.depth, self.width, self.norm = depth, width, norm

    @reg.register()
    class Model:
        def __init__(self, backbone, num_classes: int = 80, note: str = ""):
            self.backbone, self.num_classes, self.note = backbone, num_classes, note

        @classmethod
        def from_config(cls, cfg, **extra):
            return cls(build(cfg.backbone, reg), num_classes=cfg.get("num_classes", 80))

    # Let override checking find the toy classes by `type`, as it finds registered ones.
    monkeypatch.setattr(registry_mod, "_ALL_REGISTRIES", (*registry_mod._ALL_REGISTRIES, reg))
    return reg


def test_multi_level_and_multi_file_base(tmp_path):
    write(tmp_path / "_base_/a.yaml", {"model": {"x": 1, "sub": {"p": 1, "q": 2}}, "_opt": {"lr": 0.1}})
    write(tmp_path / "_base_/b.yaml", {"_base_": "a.yaml", "model": {"sub": {"q": 3}}, "_exp": {"n": [1, 2]}})
    write(tmp_path / "_base_/c.yaml", {"_opt": {"lr": 0.2, "iters": 10}})
    write(tmp_path / "exp/e.yaml", {"_base_": ["../_base_/b.yaml", "../_base_/c.yaml"], "_exp": {"n": [3]}})
    cfg = load_config(tmp_path / "exp/e.yaml")
    assert cfg.model == {"x": 1, "sub": {"p": 1, "q": 3}}
    assert cfg._opt == {"lr": 0.2, "iters": 10}  # later base wins
    assert cfg._exp.n == [3]  # lists replace
    assert "_base_" not in cfg


def test_delete_replaces_instead_of_merging(tmp_path):
    write(tmp_path / "base.yaml", {"model": {"norm": {"type": "GN", "num_groups": 32}, "keep": 1}})
    write(tmp_path / "e.yaml", {"_base_": "base.yaml", "model": {"norm": {"_delete_": True, "type": "BN"}}})
    cfg = load_config(tmp_path / "e.yaml")
    assert cfg.model.norm == {"type": "BN"}
    assert cfg.model.keep == 1


def test_base_cycle_names_the_chain(tmp_path):
    write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match=r"_base_ cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")


def test_missing_base_names_the_including_file(tmp_path):
    write(tmp_path / "a.yaml", {"_base_": "nope.yaml"})
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found \(base of .*a\.yaml\)"):
        load_config(tmp_path / "a.yaml")


def test_overrides_nested_and_typed(tmp_path):
    write(tmp_path / "e.yaml", {"_opt": {"lr": 0.1, "steps": [1]}, "_exp": {"train": {"scales": [800]}}})
    cfg = load_config(
        tmp_path / "e.yaml",
        ["_opt.lr=1e-4", "_opt.steps=[60000, 80000]", "_exp.train.scales=[640,800]", "+_opt.amp=bf16"],
    )
    assert cfg._opt.lr == pytest.approx(1e-4) and isinstance(cfg._opt.lr, float)
    assert cfg._opt.steps == [60000, 80000]
    assert cfg._exp.train.scales == [640, 800]
    assert cfg._opt.amp == "bf16"


def test_parse_value_types():
    assert parse_value("1e-4") == 1e-4
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value("{a: 1}") == {"a": 1}
    assert parse_value("abc") == "abc"


def test_override_unknown_key_suggests_closest(tmp_path):
    write(tmp_path / "e.yaml", {"_opt": {"lr": 0.1, "max_iter": 10}})
    with pytest.raises(ConfigError, match=r"_opt\.max_iters: unknown key, did you mean max_iter\?"):
        load_config(tmp_path / "e.yaml", ["_opt.max_iters=5"])
    with pytest.raises(ConfigError, match=r"expected key=value"):
        load_config(tmp_path / "e.yaml", ["_opt.lr"])


def test_registered_sections_are_checked(tmp_path):
    # `train` and `train.optimizer` are checked against the engine's schemas, also for
    # keys written in the file (not only overrides) and for a `type` that is no component.
    write(tmp_path / "e.yaml", {"train": {"max_iter": 10, "optimizer": {"type": "SGD", "lr": 0.1}}})
    assert load_config(tmp_path / "e.yaml", ["train.optimizer.momentum=0.8"]).train.optimizer.momentum == 0.8
    with pytest.raises(ConfigError, match=r"train\.optimizer\.lrr: unknown key, did you mean lr\?"):
        load_config(tmp_path / "e.yaml", ["train.optimizer.lrr=0.5"])
    write(tmp_path / "f.yaml", {"train": {"max_iter": 10, "optimizer": {"type": "SGD", "momentun": 0.9}}})
    with pytest.raises(
        ConfigError, match=r"train\.optimizer\.momentun: unknown key, did you mean momentum\?"
    ):
        load_config(tmp_path / "f.yaml")


def test_override_checks_constructor_signature(tmp_path, toy_registry):
    write(tmp_path / "e.yaml", {"model": {"type": "Model", "backbone": {"type": "Backbone", "depth": 50}}})
    # `width` is not in the file but is a Backbone argument: allowed.
    cfg = load_config(tmp_path / "e.yaml", ["model.backbone.width=128", "model.backbone.depth=101"])
    assert cfg.model.backbone.width == 128 and cfg.model.backbone.depth == 101
    with pytest.raises(ConfigError, match=r"model\.backbone\.deph: unknown key, did you mean depth\?"):
        load_config(tmp_path / "e.yaml", ["model.backbone.deph=50"])
    # every constructor argument is a valid key, also of a from_config class
    assert load_config(tmp_path / "e.yaml", ["model.note=hi"]).model.note == "hi"


def test_validate_catches_misspelt_key_in_file(tmp_path, toy_registry):
    write(tmp_path / "e.yaml", {"model": {"type": "Model", "backbone": {"type": "Backbone", "dpth": 50}}})
    with pytest.raises(ConfigError, match=r"model\.backbone\.dpth: unknown key, did you mean depth\?"):
        load_config(tmp_path / "e.yaml")


def test_build_and_registry_errors(toy_registry):
    cfg = ConfigNode(
        {"model": {"type": "Model", "backbone": {"type": "Backbone", "depth": 18}, "num_classes": 3}}
    )
    model = build(cfg.model, toy_registry)
    assert model.backbone.depth == 18 and model.num_classes == 3
    with pytest.raises(
        ConfigError, match=r"model\.backbone\.type: unknown toy type 'Backbon', did you mean Backbone\?"
    ):
        build(ConfigNode({"model": {"backbone": {"type": "Backbon"}}}).model.backbone, toy_registry)
    with pytest.raises(ConfigError, match=r"model\.backbone: missing required argument 'depth'"):
        build(ConfigNode({"model": {"backbone": {"type": "Backbone"}}}).model.backbone, toy_registry)
    with pytest.raises(ConfigError, match=r"model\.backbone\.widht: unknown key, did you mean width\?"):
        build(
            ConfigNode({"model": {"backbone": {"type": "Backbone", "depth": 1, "widht": 2}}}).model.backbone,
            toy_registry,
        )
    with pytest.raises(ConfigError, match=r"x: missing 'type'"):
        build(ConfigNode({"x": {"depth": 1}}).x, toy_registry)
    assert "Backbone" in toy_registry and list(toy_registry) == ["Backbone", "Model"]
    with pytest.raises(KeyError, match="already registered"):

        @toy_registry.register()
        class Backbone:  # noqa: F811
            pass


def test_build_extra_arguments_fill_required(toy_registry):
    obj = build(ConfigNode({"type": "Backbone"}), toy_registry, depth=34)
    assert obj.depth == 34


def test_dump_round_trip(tmp_path):
    write(tmp_path / "base.yaml", {"model": {"a": 1e-4, "b": [1, 2], "c": {"d": None, "e": "x"}}})
    write(tmp_path / "e.yaml", {"_base_": "base.yaml", "_opt": {"lr": 0.02}})
    cfg = load_config(tmp_path / "e.yaml")
    dump_config(cfg, tmp_path / "out/config.yaml")
    again = load_config(tmp_path / "out/config.yaml")
    assert again == cfg


def test_confignode_attribute_access_and_paths():
    cfg = ConfigNode({"model": {"backbone": {"depth": 50}}, "lst": [{"a": 1}]})
    assert cfg.model.backbone.depth == 50
    assert cfg.model.backbone.get_path() == "model.backbone"
    assert cfg.lst[0].get_path() == "lst.0"
    with pytest.raises(AttributeError, match=r"model\.neck: no such key"):
        _ = cfg.model.neck
    cfg.model.neck = {"type": "FPN"}
    assert cfg.model.neck.get_path() == "model.neck"


def test_print_config_tool(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "print_config", Path(__file__).parents[2] / "tools" / "print_config.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    write(tmp_path / "e.yaml", {"_opt": {"lr": 0.1}})
    assert mod.main(["--config", str(tmp_path / "e.yaml"), "_opt.lr=0.5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"_opt": {"lr": 0.5}}
    assert mod.main(["--config", str(tmp_path / "e.yaml"), "_opt.lx=0.5"]) == 2
    assert "_opt.lx: unknown key, did you mean lr?" in capsys.readouterr().err
