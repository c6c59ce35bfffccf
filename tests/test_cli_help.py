"""`terramind-ft --help` lists the Lightning commands and our own, and stays cheap (no model/data imports)."""

from __future__ import annotations

import subprocess
import sys

from terramind_ft.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("  ")]
    listed = {words[0] for words in lines if words}
    assert set(LIGHTNING_COMMANDS) == {"fit", "validate", "test", "predict"}
    assert {"fit", "validate", "test", "predict", *EXTRA_COMMANDS} <= listed


def test_a_typo_on_the_command_line_gets_its_key_and_did_you_mean(tmp_path, capsys):
    from cli_configs import sen1floods11_config, write
    from terramind_ft.cli import main

    cfg = write(sen1floods11_config(tmp_path), tmp_path / "c.yaml")
    assert main(["fit", "--config", cfg, "--trainer.max_epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "trainer.max_epoch" in err and "Did you mean 'max_epochs'" in err and "command line" in err
    assert main(["fit", "--config", cfg, "--model.init_args.lrr", "0.1"]) == 2
    assert "Did you mean 'lr'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_ckpt_path_help_says_what_best_and_last_mean_here():
    result = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "test", "--help"], capture_output=True,
                            text=True, timeout=120)
    text = " ".join(result.stdout.split())
    assert "this run folder's checkpoints/best.ckpt" in text and "fit --ckpt_path last resumes" in text


def test_check_help_is_plain_text_with_the_overrides_in_its_usage():
    result = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "check", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert "``" not in result.stdout and "[--KEY=VALUE ...]" in result.stdout.splitlines()[0]


def test_model_and_data_help_work_without_a_config_and_list_the_model_args_keys():
    for args, expected in ((["--model.help", "SemanticSegmentationTask"], "backbone_<arg>"),
                           (["--data.help", "GenericMultiModalDataModule"], "--data.train_data_root")):
        result = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "fit", *args], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert expected in " ".join(result.stdout.split()) or expected in result.stdout


def test_fit_help_lists_every_key_ours_first_without_importing_torch():
    code = ("import sys; from terramind_ft.cli import main; main(['fit', '--help']); "
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.rstrip().endswith("NO_TORCH")  # read from the sources: about 0.1 s, not LightningCLI's 8-13 s
    import inspect

    from lightning.pytorch import Trainer

    from terramind_ft.data import GenericMultiModalDataModule
    from terramind_ft.tasks import SemanticSegmentationTask
    from terramind_ft.tasks.base import BaseTask

    task_args = [p for cls in (BaseTask, SemanticSegmentationTask)
                 for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    for name in task_args:
        assert f"--model.init_args.{name} " in text or f"--model.init_args.{name}\n" in text, name
    for name in inspect.signature(GenericMultiModalDataModule.__init__).parameters:
        if name != "self":
            assert f"--data.init_args.{name}" in text, name
    for name in inspect.signature(Trainer.__init__).parameters:
        if name != "self":
            assert f"--trainer.{name}" in text, name
    for key in ("backbone_pretrained", "necks", "peft_config", "aux_decoders", "num_classes"):
        assert f"    {key} " in text, key
    # ours first, Lightning's after
    assert text.index("--ckpt_path") < text.index("--model.init_args.model_args") < text.index(
        "--data.init_args.modalities") < text.index("--trainer.accelerator")
    assert "[bf16-mixed where native" in text and "--help-lightning" in text


def test_predict_help_lists_the_embedding_task(capsys):
    import inspect

    from terramind_ft.cli import main
    from terramind_ft.tasks import EmbeddingTask

    main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "--model.class_path EmbeddingTask" in text
    for name in inspect.signature(EmbeddingTask.__init__).parameters:
        if name != "self":
            assert f"--model.init_args.{name}" in text, name
    main(["fit", "--help"])
    assert "EmbeddingTask" not in capsys.readouterr().out  # it only predicts


def test_help_lightning_is_lightningclis_own():
    result = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "fit", "--help-lightning"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "--trainer.accelerator ACCELERATOR" in result.stdout and "--print_config" in result.stdout
