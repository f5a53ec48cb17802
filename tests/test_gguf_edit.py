"""GGUF rewriting on toy files: LoRA merging and dense updates (the arithmetic, the checks) and
vocabulary trimming.

The real model goes through the same code in test_llamacpp (merged and trimmed default)."""

from __future__ import annotations

import numpy as np
import pytest

from intentkit import BackendError
from intentkit.backends.llamacpp.gguf import write_merged_gguf, write_trimmed_gguf, write_updated_gguf

gguf = pytest.importorskip("gguf")

RNG = np.random.default_rng(0)
WEIGHT = RNG.normal(size=(6, 4)).astype(np.float32)  # numpy order (out, in), as PEFT and gguf's reader use
EMBED = RNG.normal(size=(5, 4)).astype(np.float32)
TOKENS = ["<pad>", "<bos>", "a", "b", "ab"]


def _base(path, arch="gemma3"):
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_token_list(TOKENS)
    writer.add_token_scores([0.0, 0.0, -1.0, -2.0, -3.0])
    writer.add_token_types([3, 3, 1, 1, 1])
    writer.add_bos_token_id(1)
    writer.add_tensor("token_embd.weight", EMBED)
    writer.add_tensor("blk.0.attn_q.weight", WEIGHT)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(4, dtype=np.float32))
    _close(writer)
    return path


def _adapter(path, tensors, *, arch="gemma3", alpha=8.0, kind="lora"):
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", kind)
    writer.add_float32("adapter.lora.alpha", alpha)
    for name, value in tensors.items():
        writer.add_tensor(name, value.astype(np.float16))
    _close(writer)
    return path


def _close(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensors(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: np.asarray(t.data) for t in reader.tensors}


def test_merge_adds_the_scaled_low_rank_product(tmp_path):
    a = RNG.normal(size=(2, 4))  # (rank, in)
    b = RNG.normal(size=(6, 2))  # (out, rank)
    adapter = _adapter(tmp_path / "lora.gguf", {"blk.0.attn_q.weight.lora_a": a, "blk.0.attn_q.weight.lora_b": b})
    write_merged_gguf(_base(tmp_path / "base.gguf"), adapter, tmp_path / "merged.gguf", scale=0.5, quantize=False)
    _, merged = _tensors(tmp_path / "merged.gguf")
    a16, b16 = a.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(merged["blk.0.attn_q.weight"], WEIGHT + 0.5 * 8.0 / 2 * (b16 @ a16), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(merged["token_embd.weight"], EMBED)  # untouched tensors are copied
    np.testing.assert_array_equal(merged["blk.0.attn_norm.weight"], np.ones(4))


def test_merge_and_trim_in_one_pass(tmp_path):
    zeros = {"blk.0.attn_q.weight.lora_a": np.zeros((1, 4)), "blk.0.attn_q.weight.lora_b": np.zeros((6, 1))}
    adapter = _adapter(tmp_path / "lora.gguf", zeros)
    write_merged_gguf(_base(tmp_path / "base.gguf"), adapter, tmp_path / "m.gguf", keep=[0, 1, 4], quantize=False)
    reader, merged = _tensors(tmp_path / "m.gguf")
    np.testing.assert_array_equal(merged["token_embd.weight"], EMBED[[0, 1, 4]])
    np.testing.assert_allclose(merged["blk.0.attn_q.weight"], WEIGHT)
    field = reader.fields["tokenizer.ggml.tokens"]
    assert [bytes(field.parts[i]).decode() for i in field.data] == ["<pad>", "<bos>", "ab"]


def test_dense_updates_are_added_and_trimmed_with_the_vocabulary(tmp_path):
    dq = RNG.normal(size=(6, 4)).astype(np.float32)
    de = RNG.normal(size=(5, 4)).astype(np.float32)
    updates = {"blk.0.attn_q.weight": dq, "token_embd.weight": de, "blk.0.attn_norm.weight": np.full(4, 0.5)}
    write_updated_gguf(_base(tmp_path / "base.gguf"), updates, tmp_path / "u.gguf", keep=[0, 1, 4], quantize=False)
    _, updated = _tensors(tmp_path / "u.gguf")
    np.testing.assert_allclose(updated["blk.0.attn_q.weight"], WEIGHT + dq, rtol=1e-6)
    np.testing.assert_allclose(updated["token_embd.weight"], (EMBED + de)[[0, 1, 4]], rtol=1e-6)
    np.testing.assert_allclose(updated["blk.0.attn_norm.weight"], np.full(4, 1.5))


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"blk.0.attn_q.weight": np.zeros((4, 6))}, r"blk.0.attn_q.weight is \(6, 4\), the update is \(4, 6\)"),
        ({"blk.7.ffn_up.weight": np.zeros((6, 4))}, "no tensor blk.7.ffn_up.weight to update"),
    ],
)
def test_updates_that_do_not_fit_are_rejected_by_name(tmp_path, updates, message):
    with pytest.raises(BackendError, match=message):
        write_updated_gguf(_base(tmp_path / "base.gguf"), updates, tmp_path / "u.gguf", quantize=False)
    assert not (tmp_path / "u.gguf").exists()


def test_trim_remaps_special_token_ids(tmp_path):
    write_trimmed_gguf(_base(tmp_path / "base.gguf"), tmp_path / "t.gguf", np.array([4, 1, 0]))
    reader, tensors = _tensors(tmp_path / "t.gguf")
    assert reader.fields["tokenizer.ggml.bos_token_id"].contents() == 1
    assert tensors["token_embd.weight"].shape == (3, 4)


PAIR = {"blk.0.attn_q.weight.lora_a": np.zeros((2, 4)), "blk.0.attn_q.weight.lora_b": np.zeros((6, 2))}


@pytest.mark.parametrize(
    ("tensors", "options", "message"),
    [
        (PAIR, {"kind": "control_vector"}, "not a GGUF LoRA adapter"),
        (PAIR, {"arch": "llama"}, "a llama adapter cannot be merged into a gemma3 model"),
        ({"blk.0.attn_q.weight.lora_a": np.zeros((2, 4))}, {}, "has only lora_a"),
        ({**PAIR, "blk.0.attn_q.weight.lora_b": np.zeros((5, 2))}, {}, r"is \(6, 4\) in the base"),
        (
            {"blk.3.ffn_up.weight.lora_a": np.zeros((2, 4)), "blk.3.ffn_up.weight.lora_b": np.zeros((6, 2))},
            {},
            "no tensor blk.3.ffn_up.weight",
        ),
        ({"blk.0.attn_q.weight.scale": np.zeros(2)}, {}, "not a LoRA matrix"),
    ],
)
def test_adapters_that_do_not_fit_are_rejected_by_name(tmp_path, tensors, options, message):
    adapter = _adapter(tmp_path / "lora.gguf", tensors, **options)
    with pytest.raises(BackendError, match=message) as caught:
        write_merged_gguf(_base(tmp_path / "base.gguf"), adapter, tmp_path / "m.gguf", quantize=False)
    assert "lora.gguf" in str(caught.value)
    assert not (tmp_path / "m.gguf").exists()


def test_written_files_describe_the_prompt(tmp_path):
    from intentkit import PromptFormat

    writer = gguf.GGUFWriter(str(tmp_path / "base.gguf"), "gemma3")
    writer.add_token_list(["<pad>", "<bos>", "a", "<end_of_turn>", "b"])
    writer.add_token_scores([0.0] * 5)
    writer.add_token_types([3, 3, 1, 3, 1])
    writer.add_string("tokenizer.chat_template", "{{ 'someone else' }}")
    writer.add_tensor("token_embd.weight", EMBED)
    _close(writer)
    prompt = PromptFormat()
    write_trimmed_gguf(tmp_path / "base.gguf", tmp_path / "t.gguf", [0, 1, 3], prompt=prompt)
    reader = gguf.GGUFReader(str(tmp_path / "t.gguf"))
    assert reader.fields["tokenizer.chat_template"].contents() == prompt.chat_template()
    assert reader.fields["tokenizer.ggml.eot_token_id"].contents() == 2  # <end_of_turn>, after trimming
    write_trimmed_gguf(tmp_path / "base.gguf", tmp_path / "plain.gguf", [0, 1, 3])  # no prompt: copied as it was
    plain = gguf.GGUFReader(str(tmp_path / "plain.gguf"))
    assert plain.fields["tokenizer.chat_template"].contents() == "{{ 'someone else' }}"
    assert "tokenizer.ggml.eot_token_id" not in plain.fields
