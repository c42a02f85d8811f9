"""The shipped drafter on the real default teacher (SmolLM2-135M-Instruct, installed by scripts/setup.sh)."""

import json

import pytest
import torch

import ptp
from ptp.bundled import MODEL_DIR, MTP_MODEL_DIR, default_model_dir
from ptp.checkpoint_format import tokenizer_dir
from ptp.cli.common import prompt_ids


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoTokenizer

    model = ptp.PTPModel.from_pretrained(default_model_dir()).eval()
    return model, AutoTokenizer.from_pretrained(tokenizer_dir(default_model_dir()))


def test_shipped_drafters_are_small_and_name_the_registry_teacher():
    total = 0
    for directory in (MODEL_DIR, MTP_MODEL_DIR):
        meta = json.loads((directory / "ptp_config.json").read_text())
        assert meta["teacher_source"] == "smollm2-135m-instruct" and meta["ptp"]["drafter"] == "head"
        total += sum(f.stat().st_size for f in directory.iterdir())
    assert json.loads((MTP_MODEL_DIR / "ptp_config.json").read_text())["ptp"]["mode"] == "mtp"
    assert total <= 30 * 2**20


@pytest.mark.parametrize("sampling", [ptp.SamplingConfig(temperature=0, order="argmax"),
                                      ptp.SamplingConfig(temperature=0.7, top_k=50, top_p=0.95, order="argmax")])
def test_shipped_drafter_is_lossless_and_drafts(shipped, sampling):
    model, tokenizer = shipped
    ids = prompt_ids(tokenizer, "Write a short story about a robot who learns to paint.")
    eos = tokenizer.eos_token_id
    ar = ptp.generate(model, ids, 48, sampling, 3, "ar", eos_token_id=eos)
    out = ptp.generate(model, ids, 48, sampling, 3, eos_token_id=eos)
    assert out.tokens.tolist() == ar.tokens.tolist()
    assert out.mat > 1.0  # it predicts something: some calls accept drafts
    assert tokenizer.decode(ar.tokens).strip()


def test_shipped_drafter_fits_its_teacher(shipped):
    model, _ = shipped
    assert model.is_head and model.default_method == "draft-verify"
    assert model.head.vocab_ids.numel() == model.cfg.head.draft_vocab
    assert torch.equal(model.head.draft_weight, model.teacher.get_output_embeddings().weight[model.head.vocab_ids])
