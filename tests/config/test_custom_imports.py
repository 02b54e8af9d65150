"""`custom_imports: [pkg.module]` in a config imports the user's own module before the
config is checked, so its registered datasets and models are usable from every tool."""

import sys
import textwrap

import pytest
import yaml

from densenets.config import DATASETS, ConfigError, load_config

MODULE = textwrap.dedent(
    """
    from torch.utils.data import Dataset
    from densenets.config import DATASETS

    @DATASETS.register()
    class MyCustomImportsDataset(Dataset):
        def __init__(self, size: int = 3):
            self.size = size

        def __len__(self):
            return self.size
    """
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's project folder (the working directory) holding my_pkg/my_module.py."""
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "my_module.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    yield tmp_path
    for name in ("my_pkg.my_module", "my_pkg"):
        sys.modules.pop(name, None)
    DATASETS._entries.pop("MyCustomImportsDataset", None)


def _write(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_custom_imports_register_before_the_config_is_checked(project):
    cfg_path = _write(
        project / "exp.yaml",
        {
            "custom_imports": ["my_pkg.my_module"],
            "data": {"train": {"type": "MyCustomImportsDataset", "size": 5}},
        },
    )
    cfg = load_config(cfg_path)
    assert "MyCustomImportsDataset" in DATASETS
    assert cfg.data.train.size == 5
    # A misspelt argument of the user's class is caught like any other.
    with pytest.raises(ConfigError, match="data.train.sizee: unknown key, did you mean size"):
        load_config(cfg_path, ["data.train.sizee=2"])


def test_custom_imports_from_an_override(project):
    cfg_path = _write(project / "exp.yaml", {"data": {"train": {"type": "MyCustomImportsDataset"}}})
    cfg = load_config(cfg_path, ["+custom_imports=[my_pkg.my_module]"])
    assert cfg.custom_imports == ["my_pkg.my_module"]


def test_a_module_that_cannot_be_imported_is_a_one_line_error(project):
    cfg_path = _write(project / "exp.yaml", {"custom_imports": ["my_pkg.nope"]})
    with pytest.raises(
        ConfigError, match=r"custom_imports: cannot import 'my_pkg.nope' \(ModuleNotFoundError"
    ):
        load_config(cfg_path)
    bad = _write(project / "bad.yaml", {"custom_imports": "my_pkg.my_module"})
    with pytest.raises(ConfigError, match="custom_imports: must be a list of module names"):
        load_config(bad)
