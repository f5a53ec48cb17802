"""Run with LLaMA-Factory's Python: how LLaMA-Factory encodes a project's training rows.

``python llamafactory_encode.py PROJECT/llamafactory.yaml OUT.jsonl`` reads the project's config
and its training data and writes, for each row, the prompt and answer token ids that
LLaMA-Factory's own template (the config's ``template``) gives them, as JSON lines (a file, not
stdout, which LLaMA-Factory logs to). The end-to-end test compares
them with what intentkit's trainer and backends tokenize for the same rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments
from transformers import AutoTokenizer


def main(config_path: str, out: str) -> None:
    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(config["model_name_or_path"])
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=config["template"]))
    info = json.loads((Path(config["dataset_dir"]) / "dataset_info.json").read_text(encoding="utf-8"))
    entry = info[config["dataset"]]
    columns, tags = entry["columns"], entry["tags"]
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant"}
    rows = json.loads((Path(config["dataset_dir"]) / entry["file_name"]).read_text(encoding="utf-8"))
    with open(out, "w", encoding="utf-8") as file:
        for row in rows:
            turns = row[columns["messages"]]
            messages = [{"role": roles[m[tags["role_tag"]]], "content": m[tags["content_tag"]]} for m in turns]
            prompt_ids, answer_ids = template.encode_oneturn(tokenizer, messages, row[columns["system"]])
            file.write(json.dumps({"prompt": prompt_ids, "answer": answer_ids}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
