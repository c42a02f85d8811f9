import json

import torch

import ptp
from ptp.cli import main
from ptp.testing import tiny_checkpoint


def test_export_bundles_a_self_contained_model(tmp_path):
    tiny_checkpoint(tmp_path / "src")
    # a train checkpoint: adapter + config that records the teacher by path
    model = ptp.PTPModel.from_pretrained(tmp_path / "src")
    model.save_pretrained(tmp_path / "ckpt")
    src = tmp_path / "src"
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--teacher", str(src / "teacher"),
                 "--tokenizer", str(src), "--out", str(tmp_path / "bundle"),
                 "--prompts", str(src / "prompts.jsonl"), "--num-prompts", "2"]) == 0
    bundle = tmp_path / "bundle"
    assert json.loads((bundle / "ptp_config.json").read_text())["teacher_source"] == "teacher"
    assert len((bundle / "prompts.jsonl").read_text().splitlines()) == 2
    assert (bundle / "tokenizer.json").is_file()
    loaded = ptp.PTPModel.from_pretrained(bundle)
    want, got = model.trainable_state_dict(), loaded.trainable_state_dict()
    assert want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)  # the adapter itself
    a = ptp.generate(loaded, [1, 2, 3], 10, seed=0)
    b = ptp.generate(model, [1, 2, 3], 10, seed=0)
    assert torch.equal(a.tokens, b.tokens)  # the teacher (PQD is lossless whatever the adapter)
    assert a.accepted_per_call == b.accepted_per_call  # the drafts too
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(bundle)]) == 2  # exists
