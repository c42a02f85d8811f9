"""YAML training configs with command-line overrides, and the training progress bar.

Shared by ``ptp train`` and ``ptp pretrain``: a config is a YAML file of sections; every key can be
overridden with ``--set section.key=value`` or a bare ``section.key=value``; each section becomes one of
the library's frozen config dataclasses, with types coerced and unknown keys refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path

import yaml

from ptp.cli.common import Formatter


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = Formatter
    p.add_argument("--config", help="YAML config file (sections of keys; see configs/)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more overrides, e.g. train.max_steps=100")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its last checkpoint")
    p.add_argument("--out", help="shortcut for train.out_dir=OUT")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def read_config(args: argparse.Namespace) -> dict:
    """The YAML file with every override applied (values parsed as YAML scalars)."""
    data: dict = {}
    if args.config:
        try:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"cannot read config {args.config}: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{args.config}: the top level must be a mapping of sections")
    pairs = [*args.sets, *args.overrides]
    if args.out:
        pairs.append(f"train.out_dir={args.out}")
    if args.resume:
        pairs.append("train.resume=true")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not KEY=VALUE")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if node.get(part) is None:  # absent, or `section: null` in the YAML (its defaults)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(value) if value else None
    return data


def build_section(cls, values: dict | None, section: str):
    """A frozen config dataclass from a mapping, with types coerced and unknown keys refused."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown keys in section {section!r}: {unknown}; valid keys: {names}")
    return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()})


def _coerce(value, hint, key: str):
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{key} may not be null")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                continue
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is str and isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    raise ValueError(f"{key}: {value!r} is not a valid {hint}")


def config_sections(data: dict, schema: dict) -> dict:
    """Build every section of ``schema`` ({name: dataclass}) from the config mapping."""
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise ValueError(f"unknown config sections {unknown}; valid: {sorted(schema)}")
    return {name: build_section(cls, data.get(name), name) for name, cls in schema.items()}


def as_yaml(sections: dict) -> str:
    return yaml.safe_dump({k: (dataclasses.asdict(v) if v is not None else None) for k, v in sections.items()},
                          sort_keys=False)


def make_callbacks(label: str):
    """Progress bar (loss, tokens/s, ETA) and evaluation lines on stderr."""
    from tqdm import tqdm

    from ptp.training.loop import Callbacks

    class Bar(Callbacks):
        bar = None

        def on_start(self, step, max_steps, resumed_from):
            if resumed_from is not None:
                print(f"{label}: resuming from {resumed_from} at step {step}", file=sys.stderr)
            self.bar = tqdm(total=max_steps, initial=step, desc=label, unit="step", dynamic_ncols=True)

        def on_progress(self, progress):
            self.bar.update(progress.step - self.bar.n)
            self.bar.set_postfix(loss=f"{progress.loss:.4f}", acc=f"{progress.accuracy:.3f}",
                                 tok_s=f"{progress.tokens_per_s:,.0f}", eta=f"{progress.eta_s / 60:.1f}m")

        def on_eval(self, step, result, is_best):
            shown = " ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
            self.bar.write(f"[eval step {step}] {shown}{'  (best)' if is_best else ''}")

        def on_save(self, path):
            self.bar.write(f"[saved {path}]")

    return Bar()
