"""A character-level tokenizer with a 41-token vocabulary for the inverse-AR experiment.

Lower-cased Python source, digits folded to '0', characters outside the 39 kept ones to <unk>;
<|endoftext|> is BOS, EOS and padding (prepended on encoding, as ptp's BPE tokenizers do).
usage: python scripts/iar_char_tokenizer.py OUT_DIR
"""

import sys

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

CHARS = list("abcdefghijklmnopqrstuvwxyz0 \n.,()_:='\"#")


def main() -> None:
    out = sys.argv[1]
    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex("[0-9]"), "0")])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                       special_tokens=[("<|endoftext|>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")
    fast.save_pretrained(out)
    print(f"{len(vocab)}-token character tokenizer written to {out}")


if __name__ == "__main__":
    main()
