"""Library defaults that ``--help`` shows, copied here so that building the parser imports no torch.

The library modules they come from import torch, transformers or pyarrow, which takes seconds;
``ptp --help`` and argument errors should take a fraction of one. tests/test_cli.py asserts that
every value equals the library's (value and type), so a change there fails the tests until it is
copied here too.
"""

from __future__ import annotations

from types import SimpleNamespace

# ptp.bench.runner.ALL_METHODS
BENCH_METHODS = ("ar-hf", "pld", "sps", "ar", "draft-verify", "pqd", "mtp", "llama-cpp", "llama-cpp-pld")
# ptp.bench.llama_cpp.LLAMA_CPP_METHODS
LLAMA_CPP_METHODS = ("llama-cpp", "llama-cpp-pld")
# ptp.bench.tune.DEFAULT_CANDIDATES
TUNE_CANDIDATES = (2, 4, 6, 8, 12, 16, 24, 32)
# ptp.sampling.BENCH_SAMPLING (the benchmark's sampled setting)
BENCH_SAMPLING = SimpleNamespace(temperature=0.7, top_k=50, top_p=0.95)
# ptp.decoding.METHODS
DECODE_METHODS = ("ar", "draft-verify", "pqd")
# ptp.serve.protocol.SEED_LIMIT: seeds must fit a torch.Generator, 0 <= seed < 2**63
SEED_LIMIT = 2**63

# ptp.data.corpus.DEFAULT_PACKAGES and CorpusConfig
CORPUS_PACKAGES = (
    "torch", "torchgen", "transformers", "numpy", "sympy", "mpmath", "networkx", "matplotlib", "accelerate",
    "huggingface_hub", "safetensors", "tokenizers", "pyarrow", "tqdm", "rich", "pygments", "markdown_it", "yaml",
    "jinja2", "fsspec", "filelock", "packaging", "fastapi", "starlette", "pydantic", "uvicorn", "httpx", "httpcore",
    "anyio", "hypothesis", "_pytest", "setuptools",
)
CORPUS = SimpleNamespace(max_file_bytes=512_000, max_heldout_overlap=0.5)
# ptp.data.prompts.PromptConfig
PROMPTS = SimpleNamespace(max_prompts=1000, min_body_chars=40, max_body_chars=4000, max_prompt_chars=4000)
# ptp.data.documents.FORMATS
DOCUMENT_FORMATS = ("auto", "text", "jsonl", "hf-disk", "corpus")
# ptp.data.tokenizer.TokenizerConfig
TOKENIZER = SimpleNamespace(vocab_size=8192, min_frequency=2)
# ptp.data.pregenerate.PregenConfig
PREGEN = SimpleNamespace(completions_per_prompt=4, max_new_tokens=128, batch_size=32, prompts_per_shard=256)
# ptp.data.shards.DEFAULT_ROWS_PER_SHARD
ROWS_PER_SHARD = 1024
# ptp.head.HeadConfig
HEAD = SimpleNamespace(layers=1, draft_vocab=8192)
# ptp.training.head.HeadTrainConfig
HEAD_TRAIN = SimpleNamespace(steps=2000, rows_per_step=4, windows_per_row=32, lr=1e-3, z_beta=1.0, eval_every=100,
                             seed=0, distill=0.0)
# ptp.serve.config.ServeConfig
SERVE = SimpleNamespace(model_name="", host="127.0.0.1", port=8000, method=None, slot_budget=None, queue_size=64,
                        max_batch=32, max_tokens_limit=1024, default_max_tokens=16, max_prompt_tokens=0,
                        max_body_bytes=1_048_576)
