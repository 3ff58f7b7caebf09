import pytest
import yaml

from pipelines.cli import _config, main, parser


def test_data_flag_replaces_sources_and_set_overrides():
    args = parser().parse_args(["run", "--local", "--data", "a.jsonl", "b/*.jsonl", "--format", "dialogsum",
                                "--set", "train.max_steps=12", "--set", "storage.prefix=team"])
    cfg = _config(args)
    assert [(s.path, s.format) for s in cfg.data.sources] == [("a.jsonl", "dialogsum"), ("b/*.jsonl", "dialogsum")]
    assert cfg.train.max_steps == 12 and cfg.storage.prefix == "team"


def test_compile_writes_kfp_yaml(tmp_path):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    assert yaml.safe_load_all(out.read_text()).__next__()["pipelineInfo"]["name"] == "mixtune"


def test_bad_config_exits_2_with_the_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {max_steps: 0}\n")
    assert main(["compile", "--config", str(cfg), "--output", str(tmp_path / "p.yaml")]) == 2
    assert "train.max_steps" in capsys.readouterr().err


def test_run_without_local_is_refused(capsys):
    assert main(["run"]) == 2
    assert "--local" in capsys.readouterr().err


def test_sample_command(tmp_path):
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--out", str(out), "-n", "12"]) == 0
    assert len(out.read_text().splitlines()) == 12


def test_malformed_set_and_versions_are_one_line_errors(tmp_path, capsys):
    assert main(["compile", "--set", "train.max_steps", "--output", str(tmp_path / "p.yaml")]) == 2
    assert capsys.readouterr().err.strip() == ("--set 'train.max_steps': expected KEY=VALUE with a dotted key, "
                                               "e.g. --set train.max_steps=50")
    with pytest.raises(SystemExit) as e:
        main(["promote", "--version", "abc", "--workdir", str(tmp_path)])
    assert e.value.code == 2 and "'abc' is not a model version number" in capsys.readouterr().err


def test_commands_that_read_state_refuse_an_empty_folder(tmp_path, capsys):
    empty = tmp_path / "elsewhere"
    for argv in (["promote", "--version", "3"], ["rollback"], ["serve"], ["package-model", "--all"],
                 ["infer", "--data", "x.jsonl"], ["exec", "--", "true"]):
        assert main([argv[0], "--workdir", str(empty), *argv[1:]]) == 2, argv
        assert f"no mixtune state in {empty}" in capsys.readouterr().err
    assert not empty.exists()  # nothing was created there


def test_a_failed_local_run_names_the_step_its_error_and_its_log(tmp_path):
    """The quiet console on a real failure: one ✗ line, then the step's error, its last lines and its log."""
    import subprocess
    from pathlib import Path

    from tests.pipelines.test_serve_cli import BIN

    (tmp_path / "chats.jsonl").write_text('{"not": "a chat"}\n')
    done = subprocess.run([str(BIN / "mixtune"), "run", "--local", "--workdir", "st", "--data", "chats.jsonl",
                           "--set", "tracking.uri=sqlite:///st/mlflow.db"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.strip().startswith("✗ ingest") and "Executing task" not in done.stdout, done.stdout
    assert "mixtune run failed: step ingest failed: ValueError: no usable rows in ['chats.jsonl']" in done.stderr
    log = Path(done.stderr.split("its whole log: ")[1].split()[0])
    assert log.name == "01-ingest.log" and "Traceback" in log.read_text() and "  | " in done.stderr
