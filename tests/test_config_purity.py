"""Config validation touches no files; the files are checked where they are opened, with the
same one-line errors, and a bad path still leaves no run directory behind."""
import os

import pytest

from conftest import tiny_config
from lvat_tf.config import make_config
from lvat_tf.data import DataError, registry
from lvat_tf.generative.model_dir import GenerativeModelError
from lvat_tf.training import run


def test_make_config_reads_no_file_system(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("make_config touched the file system")

    for name in ("isdir", "isfile", "exists", "islink"):
        monkeypatch.setattr(os.path, name, boom)
    cfg = make_config(dataset="mnist", method="lvat_vae", data_dir=str(tmp_path / "nope"),
                      generative_model_dir=str(tmp_path / "nope"), log_dir="x")
    assert cfg.generative_model_dir.endswith("nope")


def test_a_file_as_data_dir_is_refused_where_the_data_is_opened(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match=f"--data_dir: {f} is not a directory"):
        registry.load_arrays(registry.get_spec("mnist"), str(f))


@pytest.mark.parametrize("make", ["missing", "file", "link"])
def test_a_bad_generative_model_dir_fails_before_the_run_directory_is_written(tmp_path, make):
    target = tmp_path / "g"
    if make == "file":
        target.write_text("x")
    elif make == "link":
        (tmp_path / "real").mkdir()
        os.symlink(tmp_path / "real", target)
    cfg = tiny_config(str(tmp_path / "run"), method="lvat_vae", generative_model_dir=str(target))
    want = {"missing": "is not a directory", "file": "is not a directory",
            "link": "symbolic link"}[make]
    with pytest.raises(GenerativeModelError, match=f"--generative_model_dir: .*{want}"):
        run.train_and_evaluate(cfg, verbose=0)
    assert not (tmp_path / "run").exists()
