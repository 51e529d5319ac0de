"""pcseg.engine.stages: a stage's manifest on disk decides whether its body runs, reruns or is refused."""
import json

import pytest

from pcseg.engine.stages import Stage, StageSettingsError
from pcseg.utils.errors import InputError


class Body:
    """A stage body that appends a line to ``<folder>/out.txt`` per call, optionally failing after it."""

    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = 0, fail

    def __call__(self, folder):
        self.calls += 1
        with open(folder / "out.txt", "a", encoding="utf-8") as fh:
            fh.write(f"call {self.calls}\n")
        if self.fail:
            raise KeyboardInterrupt  # as a killed run leaves it


def _manifest(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_new_stage_runs_then_is_reused(tmp_path):
    stage, body = Stage("train", tmp_path / "w", {"lr": 0.1, "grids": (0.1, 0.5)}), Body()
    assert stage.state() == "new" and stage.manifest == tmp_path / "w" / "train.stage.json"
    assert stage.run(body) is True and body.calls == 1
    assert _manifest(stage.manifest) == {"stage": "train", "settings": {"lr": 0.1, "grids": [0.1, 0.5]}, "done": True}
    again = Stage("train", tmp_path / "w", {"grids": [0.1, 0.5], "lr": 0.1})  # lists == tuples, key order free
    assert again.state() == "done" and again.run(body) is False and body.calls == 1
    assert (tmp_path / "w" / "out.txt").read_text() == "call 1\n"
    assert [p.name for p in sorted((tmp_path / "w").iterdir())] == ["out.txt", "train.stage.json"]  # no temporaries


def test_a_finished_stage_with_other_settings_is_refused_with_the_differences(tmp_path):
    Stage("select", tmp_path, {"round": 0, "budget": {"total": 0.02, "seed": 0}}).run(Body())
    before = (tmp_path / "select.stage.json").read_bytes()
    changed = Stage("select", tmp_path, {"round": 0, "budget": {"total": 0.03, "seed": 0}, "strategy": "hpal"})
    body = Body()
    with pytest.raises(StageSettingsError) as err:
        changed.run(body)
    assert str(err.value) == (f"{tmp_path / 'select.stage.json'}: stage 'select' finished with other settings "
                              f"(budget.total: 0.02 -> 0.03; strategy: '<absent>' -> 'hpal'); restore them or use "
                              f"another work directory")
    assert isinstance(err.value, InputError) and body.calls == 0
    assert (tmp_path / "select.stage.json").read_bytes() == before  # nothing written


def test_an_interrupted_stage_resumes_on_what_it_left_and_refuses_other_settings(tmp_path):
    stage = Stage("pretrain", tmp_path, {"epochs": 2})
    with pytest.raises(KeyboardInterrupt):
        stage.run(Body(fail=True))
    assert _manifest(stage.manifest)["done"] is False and stage.state() == "interrupted"
    with pytest.raises(StageSettingsError, match=r"stage 'pretrain' started with other settings \(epochs: 2 -> 3\)"):
        Stage("pretrain", tmp_path, {"epochs": 3}).run(Body())
    body = Body()
    body.calls = 1  # the second call of the body on this folder
    assert stage.run(body) is True
    assert (tmp_path / "out.txt").read_text() == "call 1\ncall 2\n"  # the folder as the first call left it
    assert stage.state() == "done"


def test_stages_share_a_folder_and_only_the_writer_writes(tmp_path):
    first, second = Stage("pretrain", tmp_path, {"a": 1}), Stage("export", tmp_path, {"b": 2})
    follower = Body()
    assert first.run(follower, write=False) is True and follower.calls == 1  # another rank: runs, writes no stage file
    assert first.state() == "new"
    first.run(Body())
    second.run(Body())
    assert first.state() == second.state() == "done"
    assert sorted(p.name for p in tmp_path.glob("*.stage.json")) == ["export.stage.json", "pretrain.stage.json"]


def test_unreadable_manifests_and_settings_json_cannot_hold(tmp_path):
    (tmp_path / "train.stage.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"train.stage.json: expected a stage manifest with 'settings' and 'done', "
                                         r"got unreadable content"):
        Stage("train", tmp_path, {}).state()
    (tmp_path / "train.stage.json").write_text('{"stage": "train"}', encoding="utf-8")
    with pytest.raises(InputError, match="unreadable content"):
        Stage("train", tmp_path, {}).run(Body())
    with pytest.raises(TypeError, match="not JSON serializable"):
        Stage("other", tmp_path, {"path": tmp_path}).run(Body())
