"""The LLaMA-Factory project: what ``data convert --to llamafactory`` writes, and the record it
keeps in step with the config that ran. The real LLaMA-Factory run is tests/e2e/test_llamafactory.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from intentkit import PromptFormat
from intentkit.cli import app
from intentkit.errors import ConfigError
from intentkit.model_dir import ModelInfo
from trainers.config import TrainConfig
from trainers.llamafactory import is_llamafactory_project, sync_trained_project, write_llamafactory_project

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_base(tiny_model, tmp_path_factory) -> Path:
    """The tiny gemma-3 as a Hugging Face checkpoint, the kind of base LLaMA-Factory loads."""
    directory = tmp_path_factory.mktemp("base")
    model, tokenizer = tiny_model()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_the_project_carries_intentkit_prompt_recipe_and_record(tiny_records, tiny_base, tmp_path):
    config = TrainConfig(base=str(tiny_base), lora_r=8, epochs=3)
    project = write_llamafactory_project(tiny_records[:12], tmp_path, config, dev=tiny_records[12:], files=["t.jsonl"])

    info = json.loads((tmp_path / "data" / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(info) == {"intentkit_train", "intentkit_dev"}
    assert info["intentkit_train"]["formatting"] == "sharegpt"
    assert info["intentkit_train"]["columns"] == {"messages": "conversations", "system": "system"}
    rows = json.loads((tmp_path / "data" / "train.json").read_text(encoding="utf-8"))
    assert len(rows) == 12
    assert rows[0] == {
        "conversations": [
            {"from": "human", "value": tiny_records[0].instruction},
            {"from": "gpt", "value": tiny_records[0].target},
        ],
        "system": PromptFormat().system_prompt,
    }

    settings = yaml.safe_load(project.config.read_text(encoding="utf-8"))
    assert settings["template"] == "gemma" and settings["stage"] == "sft" and settings["finetuning_type"] == "lora"
    assert (settings["lora_rank"], settings["lora_alpha"], settings["num_train_epochs"]) == (8, 16, 3)
    assert Path(settings["output_dir"]) == tmp_path.resolve()  # the weights land beside intentkit.json
    assert Path(settings["model_name_or_path"]) == tiny_base.resolve()
    assert settings["eval_dataset"] == "intentkit_dev"
    # A power of two over the longest row, its end of turn and LLaMA-Factory's newline after it.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    prompt = PromptFormat()
    longest = max(
        len(tokenizer(prompt.render(r.instruction) + r.target + prompt.answer_end + "\n")["input_ids"]) for r in tiny_records
    )
    assert project.cutoff_len >= longest and project.cutoff_len & (project.cutoff_len - 1) == 0

    record = ModelInfo.load(tmp_path)
    assert record.model_type == "gemma3_text" and record.method == "lora" and record.base == str(tiny_base)
    assert record.prompt_format == PromptFormat()
    assert record.intents == sorted({r.intent for r in tiny_records[:12]})
    assert is_llamafactory_project(tmp_path)
    assert project.command == f"llamafactory-cli train {tmp_path / 'llamafactory.yaml'}"


@pytest.mark.parametrize(("method", "expected"), [("qlora", "quantization_bit: 4"), ("full", "finetuning_type: full")])
def test_methods_map_to_llamafactory_settings(tiny_records, tiny_base, tmp_path, method, expected):
    project = write_llamafactory_project(tiny_records, tmp_path, TrainConfig(base=str(tiny_base), method=method))
    assert expected in project.config.read_text(encoding="utf-8")
    assert ("lora_rank" in project.config.read_text(encoding="utf-8")) == (method != "full")


def test_the_record_follows_the_config_that_ran(tiny_records, tiny_base, tmp_path):
    write_llamafactory_project(tiny_records, tmp_path, TrainConfig(base=str(tiny_base)))
    with pytest.raises(ConfigError, match=r"no adapter_model.safetensors yet; train the project first: llamafactory-cli train"):
        sync_trained_project(tmp_path)
    config = tmp_path / "llamafactory.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("lora_rank: 64", "lora_rank: 32"), encoding="utf-8")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")  # what LLaMA-Factory leaves; only its presence matters here
    info = sync_trained_project(tmp_path)
    assert info.config["lora_r"] == 32 and ModelInfo.load(tmp_path).config["lora_r"] == 32

    config.write_text(config.read_text(encoding="utf-8").replace("template: gemma", "template: qwen"), encoding="utf-8")
    with pytest.raises(ConfigError, match="template 'qwen' renders another prompt"):
        sync_trained_project(tmp_path)


def test_refusals(tiny_records, tiny_base, tmp_path):
    with pytest.raises(ConfigError, match="no training rows"):
        write_llamafactory_project([], tmp_path, TrainConfig(base=str(tiny_base)))
    with pytest.raises(ConfigError, match="zero-shot"):
        write_llamafactory_project(
            tiny_records, tmp_path, TrainConfig(base=str(tiny_base)), prompt=PromptFormat(list_intents=True)
        )
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds trained weights"):
        write_llamafactory_project(tiny_records, tmp_path, TrainConfig(base=str(tiny_base)))


def test_cli_writes_the_project_and_says_what_to_run(tiny_base, tmp_path):
    data = tmp_path / "train.jsonl"
    rows = [
        {"instruction": "我想听音乐", "output": "play_music()"},
        {"instruction": "查下杭州天气", "output": "weather_search(杭州)"},
    ]
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["data", "convert", str(data), str(tmp_path / "lf"), "--to", "llamafactory", "--base", str(tiny_base)]
    )
    assert result.exit_code == 0, result.output
    assert f"llamafactory-cli train {tmp_path / 'lf' / 'llamafactory.yaml'}" in result.output
    assert f"intentkit export {tmp_path / 'lf'}" in result.output
    result = CliRunner().invoke(app, ["export", str(tmp_path / "lf")])
    assert result.exit_code == 2 and "train the project first" in result.output
