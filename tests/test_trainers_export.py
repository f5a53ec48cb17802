"""GGUF LoRA export of a PEFT adapter trained on the tiny model (names, shapes, alpha)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from test_trainers_train import RECORDS, tiny_model_and_tokenizer  # noqa: E402

from trainers.export import ExportError, export_gguf_lora  # noqa: E402
from trainers.train import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter")
    config = TrainConfig(epochs=1, batch_size=4, lora_r=4, lora_alpha=8)
    train(RECORDS, out, config, model_and_tokenizer=tiny_model_and_tokenizer(), progress=False)
    return out


def test_export_writes_llama_cpp_lora_layout(adapter_dir):
    path = export_gguf_lora(adapter_dir)
    reader = gguf.GGUFReader(path)
    fields = {name: reader.fields[name] for name in reader.fields}
    assert fields["general.type"].contents() == "adapter"
    assert fields["adapter.type"].contents() == "lora"
    assert fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    assert fields["general.architecture"].contents() == "gemma3"
    tensors = {t.name: t for t in reader.tensors}
    # 2 layers × 7 projections × (A, B)
    assert len(tensors) == 2 * 7 * 2
    a, b = tensors["blk.0.attn_q.weight.lora_a"], tensors["blk.0.attn_q.weight.lora_b"]
    # GGUF stores dims reversed: A is (r, in) → ne = [in, r]; B is (out, r) → ne = [r, out].
    assert list(a.shape) == [32, 4]
    assert list(b.shape) == [4, 2 * 16]
    assert "blk.1.ffn_down.weight.lora_b" in tensors


def test_export_rejects_a_directory_without_an_adapter(tmp_path):
    with pytest.raises(ExportError, match="not a PEFT adapter"):
        export_gguf_lora(tmp_path)


def test_export_rejects_non_lora_adapters(adapter_dir, tmp_path):
    for name in ("adapter_model.safetensors", "intentkit.json"):
        (tmp_path / name).write_bytes((adapter_dir / name).read_bytes())
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(ExportError, match="only LoRA"):
        export_gguf_lora(tmp_path)
