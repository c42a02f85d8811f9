import json

import pytest
import torch
from transformers import DynamicCache

import ptp
from ptp.checkpoint_format import CONFIG_NAME, WEIGHTS_NAME
from ptp.embedding import FEATURE_MAPS, UEmbedding, arith_features, binary_features
from ptp.testing import FAMILIES, randomize_adapters, tiny_teacher


def mixed_inputs(n_tokens=6, n_slots=4, vocab=48, seed=0):
    """Tokens then a window of O-PTP slots, with a causal mask (slots see every token)."""
    gen = torch.Generator().manual_seed(seed)
    q = n_tokens + n_slots
    tokens = torch.randint(vocab, (1, q), generator=gen)
    u = torch.rand(1, q, generator=gen)
    is_slot = torch.zeros(1, q, dtype=torch.bool)
    is_slot[:, n_tokens:] = True
    positions = torch.cat([torch.arange(n_tokens), torch.arange(n_slots) + n_tokens - 1])[None]
    mask = torch.tril(torch.ones(q, q, dtype=torch.bool))[None, None]
    return tokens, u, is_slot, positions, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_from_teacher_by_path_adapts_every_decoder_linear(family, saved_teacher):
    path, _teacher = saved_teacher(family)
    model = ptp.PTPModel.from_teacher(str(path), lora_rank=4)
    expected = 14 if family in ("llama", "qwen2") else 8  # 7 per Llama/Qwen2 layer; 4 Conv1D per GPT-2 layer
    assert len(model.lora.adapters) == expected
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert all(p.requires_grad for p in model.lora.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_token_rows_are_exactly_the_teacher(family):
    """Adapters act only at u-slots: token rows do not change when the adapters do."""
    model = ptp.PTPModel.from_teacher(tiny_teacher(family), lora_rank=4).eval()
    inputs = mixed_inputs()
    with torch.no_grad():
        fresh = model(*inputs).logits
        randomize_adapters(model, seed=1)
        adapted = model(*inputs).logits
    assert torch.equal(fresh[:, :6], adapted[:, :6])
    assert not torch.allclose(fresh[:, 6:], adapted[:, 6:])
    # and the token rows equal the plain teacher on the same tokens
    with torch.no_grad():
        plain = model.teacher(inputs[0][:, :6]).logits
    assert torch.allclose(adapted[:, :6], plain, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_forward_equals_uncached(family):
    model = ptp.PTPModel.from_teacher(tiny_teacher(family), lora_rank=4).eval()
    randomize_adapters(model, seed=2)
    tokens, u, is_slot, positions, full_mask = mixed_inputs()
    with torch.no_grad():
        full = model(tokens, u, is_slot, positions, attention_mask=full_mask).logits
        cache = DynamicCache(config=model.teacher.config)
        none = torch.zeros(1, 6, dtype=torch.bool)
        model(tokens[:, :6], u[:, :6], none, positions[:, :6], cache=cache)
        mask = torch.ones(1, 1, 4, 10, dtype=torch.bool)
        mask[..., 6:] = torch.tril(torch.ones(4, 4, dtype=torch.bool))
        tail = model(tokens[:, 6:], u[:, 6:], is_slot[:, 6:], positions[:, 6:], attention_mask=mask, cache=cache).logits
    assert torch.allclose(full[:, 6:], tail, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["o-ptp", "c-ptp", "mtp"])
def test_save_load_round_trip(family, mode, saved_teacher, tmp_path):
    path, _ = saved_teacher(family)
    cfg = ptp.SamplingConfig(temperature=0.7, top_k=5, top_p=0.9, order="argmax")
    model = ptp.PTPModel.from_teacher(str(path), mode=mode, lora_rank=4, embedding="cosine", sampling=cfg).eval()
    randomize_adapters(model, seed=3)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = ptp.PTPModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.cfg == model.cfg
    meta = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    assert meta["ptp"]["sampling"] == {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "order": "argmax"}
    assert set(meta["teacher_fingerprint"]) >= {"architecture", "vocab_size", "hidden_size", "weight_hash"}
    inputs = mixed_inputs()
    with torch.no_grad():
        assert torch.equal(model(*inputs).logits, loaded(*inputs).logits)


def test_bundled_teacher_round_trip(tmp_path):
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama"), lora_rank=4).eval()
    randomize_adapters(model, seed=4)
    model.save_pretrained(tmp_path / "ckpt", include_teacher=True)
    assert (tmp_path / "ckpt" / "teacher" / "model.safetensors").is_file()
    loaded = ptp.PTPModel.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        assert torch.equal(model(*mixed_inputs()).logits, loaded(*mixed_inputs()).logits)


def test_load_adapter_continues_a_saved_drafter_and_checks_its_shape(saved_teacher, tmp_path):
    path, _ = saved_teacher("llama", seed=0)
    trained = ptp.PTPModel.from_teacher(str(path), lora_rank=4, window=4).eval()
    randomize_adapters(trained, seed=5)
    trained.save_pretrained(tmp_path / "ckpt")
    warm = ptp.SamplingConfig(temperature=0.5)
    fresh = ptp.PTPModel.from_teacher(str(path), lora_rank=4, window=4, sampling=warm).eval()
    fresh.load_adapter(tmp_path / "ckpt")
    assert fresh.cfg.sampling == warm  # the loading model's own config is kept
    with torch.no_grad():
        assert torch.equal(trained(*mixed_inputs()).logits, fresh(*mixed_inputs()).logits)
    for other in (dict(lora_rank=8, window=4), dict(lora_rank=4, window=4, mode="c-ptp"),
                  dict(lora_rank=4, window=4, embedding="arith")):
        with pytest.raises(ValueError, match=r"has (lora|mode|embedding)"):
            ptp.PTPModel.from_teacher(str(path), **other).load_adapter(tmp_path / "ckpt")
    different, _ = saved_teacher("llama", seed=1)
    with pytest.raises(ValueError, match="different teacher"):
        ptp.PTPModel.from_teacher(str(different), lora_rank=4, window=4).load_adapter(tmp_path / "ckpt")


def test_loading_against_a_different_teacher_fails(saved_teacher, tmp_path):
    path, _ = saved_teacher("llama", seed=0)
    other, _ = saved_teacher("llama", seed=1)
    ptp.PTPModel.from_teacher(str(path), lora_rank=4).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"different teacher.*weight_hash"):
        ptp.PTPModel.from_pretrained(tmp_path / "ckpt", teacher=str(other))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_corrupt_adapter_file_fails_clearly(damage, saved_teacher, tmp_path):
    path, _ = saved_teacher("llama")
    ckpt = tmp_path / "ckpt"
    ptp.PTPModel.from_teacher(str(path), lora_rank=4).save_pretrained(ckpt)
    weights = ckpt / WEIGHTS_NAME
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 64)
    else:
        weights.unlink()
    with pytest.raises(ValueError, match=r"corrupt|truncated|missing"):
        ptp.PTPModel.from_pretrained(ckpt)


def test_bad_config_json_fails_clearly(saved_teacher, tmp_path):
    path, _ = saved_teacher("llama")
    ckpt = tmp_path / "ckpt"
    ptp.PTPModel.from_teacher(str(path), lora_rank=4).save_pretrained(ckpt)
    (ckpt / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ptp.PTPModel.from_pretrained(ckpt)


def test_update_config_validates_and_rewrites_only_valid_changes(saved_teacher, tmp_path):
    from ptp.checkpoint_format import update_config

    path, _ = saved_teacher("llama")
    ckpt = tmp_path / "ckpt"
    ptp.PTPModel.from_teacher(str(path), lora_rank=4).save_pretrained(ckpt)
    assert update_config(ckpt, slot_budget=3, correct_hist=[0.5, 0.5])["slot_budget"] == 3
    assert ptp.PTPModel.from_pretrained(ckpt).cfg.slot_budget == 3
    before = (ckpt / CONFIG_NAME).read_bytes()
    with pytest.raises(ValueError, match="slot_budget"):
        update_config(ckpt, slot_budget=0)
    with pytest.raises(ValueError, match="has no field"):
        update_config(ckpt, slot_budgett=4)
    assert (ckpt / CONFIG_NAME).read_bytes() == before
    assert not list(ckpt.glob("*.tmp"))


def test_pickle_files_are_refused(tmp_path):
    ckpt = tmp_path / "pickled"
    ckpt.mkdir()
    torch.save({"x": torch.zeros(1)}, ckpt / "adapter.bin")
    with pytest.raises(ValueError, match="never unpickles"):
        ptp.PTPModel.from_pretrained(ckpt)
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    torch.save({"x": torch.zeros(1)}, teacher_dir / "pytorch_model.bin")
    with pytest.raises(ValueError, match="never unpickles"):
        ptp.PTPModel.from_teacher(str(teacher_dir))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"mode": "x-ptp"}, "mode"), ({"embedding": "fourier"}, "embedding"), ({"lora_rank": 0}, "rank"),
     ({"window": 0}, "window")],
)
def test_bad_model_options_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ptp.PTPModel.from_teacher(tiny_teacher("llama"), **kwargs)


def test_slots_without_a_mask_are_refused():
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama"), lora_rank=4)
    tokens, u, is_slot, positions, _ = mixed_inputs()
    with pytest.raises(ValueError, match="attention_mask"):
        model(tokens, u, is_slot, positions)


def test_binary_features_are_the_float32_bits():
    feats = binary_features(torch.tensor([0.5, 0.0]))
    bits_half = format(0x3F000000, "032b")  # 0.5 in IEEE-754 float32
    assert feats[0].tolist() == [1.0 if b == "1" else -1.0 for b in bits_half]
    assert feats[1].tolist() == [-1.0] * 32


def test_arith_features_are_the_binary_expansion():
    u = torch.tensor([0.5, 0.0, 0.75 + 2.0**-24, 0.3])
    feats = arith_features(u)
    assert feats.shape == (4, 24)
    assert feats[0].tolist() == [1.0] + [-1.0] * 23
    assert feats[1].tolist() == [-1.0] * 24
    assert feats[2].tolist() == [1.0, 1.0] + [-1.0] * 21 + [1.0]
    weights = 2.0 ** -torch.arange(1, 25, dtype=torch.float64)  # u is affine in the features
    value = ((feats.double() + 1) / 2 * weights).sum(-1)
    torch.testing.assert_close(value, u.double(), atol=2.0**-24, rtol=0)


@pytest.mark.parametrize("kind", sorted(FEATURE_MAPS))
def test_u_embeddings_separate_nearby_u(kind):
    emb = UEmbedding(kind, hidden_size=16, token_embedding_std=1.0)
    out = emb(torch.tensor([[0.25, 0.26, 0.75]]))
    assert out.shape == (1, 3, 16)
    assert not torch.allclose(out[0, 0], out[0, 1])
