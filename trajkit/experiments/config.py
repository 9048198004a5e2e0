"""Experiment configuration: the TOML schema, defaults, ``--set`` overrides and validation.

A config is a TOML file with the sections ``[model]``, ``[data]``, ``[loss]``, ``[dynamics]``, ``[run]``,
``[snapshots]``, ``[metrics]`` and ``[sweep]``, optionally ``[[stages]]`` (see docs/EXPERIMENTS.md).
:func:`load_config` returns the *resolved* config: a plain dict holding every key of every section (defaults
filled in, relative ``data.path``, ``data.root`` and ``run.init_from`` made absolute), validated before
anything runs.

Validation is :mod:`trajkit.validation` (JSON Schema, the same layer as the analysis parameters): each
:class:`Key` has a :meth:`~Key.json_schema`, :func:`config_schema` is the schema of a whole raw config
(sections, keys, the sweep), and :func:`resolve` checks a config against it, then applies the rules that
involve several keys (:func:`check_consistency`). Numbers must be finite: TOML's ``nan`` / ``inf`` and
``--set key=nan`` are refused like any out-of-range value, before anything is written.
Every error is one line naming the key and the fix, with a "did you mean" suggestion for misspellings.

>>> cfg = load_config("examples/demo.toml", ["dynamics.lr=0.05"])       # doctest: +SKIP
>>> cfg["dynamics"]["lr"]                                              # doctest: +SKIP
0.05
"""

from __future__ import annotations

import copy
import functools
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajkit.devices import is_device_name
from trajkit.errors import ConfigError
from trajkit.validation import Violation, closest, first_violation

Config = dict[str, Any]


@dataclass(frozen=True)
class Key:
    """One config key: its type, default, allowed values or range, and a one-line meaning."""

    type: str  # int | float | bool | str | list[int] | int? | str? (``?``: may be absent/None)
    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    exclusive_maximum: bool = False

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema (Draft 2020-12, :mod:`trajkit.validation`'s numeric types) of a valid value."""
        base = self.type.rstrip("?")
        item: dict[str, Any] = {"type": _SCHEMA_TYPE[base.removeprefix("list[").removesuffix("]")]}
        if self.choices is not None:
            item["enum"] = list(self.choices)
        if self.minimum is not None:
            item["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            item["exclusiveMaximum" if self.exclusive_maximum else "maximum"] = self.maximum
        schema = {"type": "array", "items": item} if base.startswith("list[") else item
        if self.type.endswith("?"):
            schema = {**schema, "type": [schema["type"], "null"]}
        return schema


_SCHEMA_TYPE = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "list[int]": "a list of integers"}

ACTIVATIONS = ("auto", "relu", "tanh", "sigmoid", "gelu", "elu", "softplus", "linear")
DATASETS = ("digits", "teacher", "gaussian_mixture", "pca_parity", "npz", "bach_chorales", "mnist", "fashion_mnist",
            "cifar10")

SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        "kind": Key("str", "mlp", "architecture: mlp, cnn (small conv net for images) or rnn (tanh RNN)",
                    ("mlp", "cnn", "rnn")),
        "hidden": Key("list[int]", [32], "mlp: widths of the hidden layers ([] is a linear model)", minimum=1),
        "bias": Key("bool", True, "whether every layer has a bias"),
        "activation": Key("str", "auto", "nonlinearity; auto = relu for mlp/cnn, tanh for rnn", ACTIVATIONS),
        "channels": Key("list[int]", [8, 16], "cnn: output channels of each conv layer", minimum=1),
        "kernel_size": Key("int", 3, "cnn: odd square kernel size (padding keeps the image size)", minimum=1),
        "pool": Key("bool", True, "cnn: 2x2 max-pooling after each conv layer (while the image is >= 2 px)"),
        "width": Key("int", 32, "rnn: hidden-state size of each recurrent layer", minimum=1),
        "depth": Key("int", 1, "rnn: number of stacked recurrent layers; mlp with n_params: number of hidden "
                               "layers", minimum=1),
        "n_params": Key("int?", None, "mlp, rnn: total parameter count N: the width (of each of the depth hidden "
                                      "layers) giving the closest count is chosen; hidden / width are then "
                                      "ignored", minimum=1),
        "cell": Key("str", "tanh", "rnn: recurrent cell: tanh (h = a(W_ih x + b + W_hh h), a = activation), gru "
                                   "or lstm", ("tanh", "gru", "lstm")),
    },
    "data": {
        "name": Key("str", "digits", "dataset (none is downloaded)", DATASETS),
        "seed": Key("int", 0, "seed of the train/test split and of synthetic data (shared by all replicas)",
                    minimum=0),
        "test_fraction": Key("float", 0.2, "digits, pca_parity, bach_chorales: fraction held out for testing "
                                           "(bach_chorales: of the chorales)",
                             minimum=0, exclusive_minimum=True, maximum=1, exclusive_maximum=True),
        "n_train": Key("int?", None, "training-set size P (digits/pca_parity: subsample, default all; "
                                     "synthetic: default 1000)", minimum=1),
        "n_test": Key("int?", None, "test-set size (synthetic: default 1000; digits/pca_parity: subsample)",
                      minimum=1),
        "dim": Key("int", 20, "teacher, gaussian_mixture: input dimension", minimum=1),
        "teacher_hidden": Key("int", 32, "teacher: width of the random teacher's hidden layer", minimum=1),
        "label_noise": Key("float", 0.0, "teacher: probability that a label is flipped", minimum=0, maximum=1,
                           exclusive_maximum=True),
        "classes": Key("int", 2, "gaussian_mixture: number of classes", minimum=2),
        "separation": Key("float", 3.0, "gaussian_mixture: distance of each class centre from the origin, "
                                        "in units of the within-class standard deviation", minimum=0),
        "components": Key("int", 10, "pca_parity: number k of leading principal components", minimum=1,
                          maximum=64),
        "path": Key("str?", None, "npz: file holding X_train, y_train, X_test, y_test"),
        "root": Key("str?", None, "mnist, fashion_mnist, cifar10: folder holding the standard files (IDX, gzipped "
                                  "or not, flat or in torchvision's MNIST/raw; cifar-10-batches-bin)"),
        "preprocess": Key("str", "none", "mnist, fashion_mnist, cifar10: none (pixels / 255), standardize (per "
                                         "pixel, training-set mean and std) or binary_pca (standardize, first "
                                         "n_components principal components, even/odd classes)",
                          ("none", "standardize", "binary_pca")),
        "n_components": Key("int", 10, "binary_pca: number k of leading principal components", minimum=1),
        "chorales": Key("int?", None, "bach_chorales: use the first n four-part chorales of the corpus "
                                      "(default all)", minimum=2),
        "quantisation": Key("str", "sixteenth", "bach_chorales: time step of the grid", ("sixteenth", "eighth")),
        "seq_len": Key("int", 32, "bach_chorales: time steps L per training sequence (windows of L + 1 steps)",
                       minimum=1),
        "transpositions": Key("int", 0, "bach_chorales: add the training chorales shifted by ±1..±k semitones "
                                        "(those that stay in every voice's range)", minimum=0, maximum=12),
        "strict": Key("bool", False, "bach_chorales: refuse (rather than warn) when the grid drops notes"),
    },
    "loss": {
        "name": Key("str", "cross_entropy", "training loss", ("cross_entropy", "mse", "quadratic_hinge")),
    },
    "dynamics": {
        "kind": Key("str", "sgd", "update rule: sgd (minibatch, momentum), gd (full batch), langevin "
                                  "(full batch + thermal noise)", ("sgd", "gd", "langevin")),
        "lr": Key("float", 0.01, "learning rate η", minimum=0, exclusive_minimum=True),
        "temperature": Key("float", 0.0, "langevin: temperature T of the noise sqrt(2Tη/P)·ξ", minimum=0),
        "weight_decay": Key("float", 0.0, "L2 coefficient λ: the update uses ∇L + λw", minimum=0),
        "batch_size": Key("int", 64, "sgd: minibatch size B (gd and langevin use the full batch)", minimum=1),
        "momentum": Key("float", 0.0, "sgd: heavy-ball momentum μ", minimum=0, maximum=1,
                        exclusive_maximum=True),
    },
    "run": {
        "steps": Key("int", 1000, "number of optimiser steps; snapshots cover steps 0..steps", minimum=1),
        "seed": Key("int", 0, "seed of replica 0; replica r uses seed + r (init, minibatches, noise)",
                    minimum=0),
        "replicas": Key("int", 1, "independent replicas of each configuration, trained together", minimum=1),
        "device": Key("str", "cpu", "cpu, cuda or cuda:K"),
        "init_from": Key("str?", None, "start from a recorded snapshot: 'path/run.trajkit@STEP' (or @last); "
                                       "'{replica}' in the path is replaced by the replica index"),
        "dtype": Key("str", "float32", "floating-point type of the parameters, data and training arithmetic; "
                                       "float64 also stores snapshots/params in float64 (losslessly)",
                     ("float32", "float64")),
        "vectorize": Key("bool", True, "train the replicas as one batched computation (false: one replica "
                                       "at a time, the reference path)"),
    },
    "snapshots": {
        "schedule": Key("str", "log", "which steps are recorded", ("log", "linear", "explicit")),
        "n": Key("int", 60, "log: about n log-spaced snapshots between start and run.steps", minimum=1),
        "start": Key("int", 1, "log: first nonzero snapshot step", minimum=1),
        "every": Key("int", 100, "linear: a snapshot every `every` steps from step 0", minimum=1),
        "steps": Key("list[int]", [], "explicit: the snapshot steps", minimum=0),
    },
    "metrics": {
        "gradient_stats": Key("bool", False, "record grad_mean_norm2, grad_var and noise_D at each snapshot (over "
                                             "gradient_batches seeded minibatches)"),
        "gradient_batches": Key("int", 32, "gradient_stats: number K of minibatch gradients per snapshot",
                                minimum=2),
        "gradient_batch_size": Key("int", 1, "gradient_stats: samples b per minibatch (1: per-sample gradients, "
                                             "so noise_D is SGD's diffusion coefficient)", minimum=1),
    },
}
SECTIONS = (*SCHEMA, "sweep")


def default_config() -> Config:
    """Every section with its default values (and an empty sweep)."""
    cfg: Config = {sec: {k: copy.deepcopy(key.default) for k, key in keys.items()} for sec, keys in SCHEMA.items()}
    cfg["sweep"] = {}
    return cfg


def all_keys() -> list[str]:
    """Every valid dotted key, ``section.key``."""
    return [f"{sec}.{k}" for sec, keys in SCHEMA.items() for k in keys]


def suggest(word: str, options: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest option, or ``""`` (:func:`trajkit.validation.closest`)."""
    close = closest(word, options, cutoff=0.5)
    return f"; did you mean {close}?" if close else ""


@functools.cache
def _schema() -> dict[str, Any]:
    sections = {sec: {"type": "object", "properties": {k: key.json_schema() for k, key in keys.items()},
                      "additionalProperties": False} for sec, keys in SCHEMA.items()}
    sweep = {f"{sec}.{k}": {"type": "array", "minItems": 1, "uniqueItems": True, "items": key.json_schema()}
             for sec, keys in SCHEMA.items() for k, key in keys.items()}
    sections["sweep"] = {"type": "object", "properties": sweep, "additionalProperties": False}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "trajkit record config",
            "type": "object", "properties": sections, "additionalProperties": False}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a raw config (what a TOML file plus ``--set`` may hold; every key optional)."""
    return copy.deepcopy(_schema())


# -- loading -------------------------------------------------------------------------------------------------


def read_toml(path: str | Path) -> Config:
    """The raw TOML document at ``path`` (one-line errors for a missing or malformed file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file" + ("; it is a directory" if p.is_dir() else ""))
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"dynamics.lr=1e-3"`` → ``("dynamics.lr", 0.001)``. The value is read as a TOML value
    (numbers, booleans, ``[lists]``, quoted strings); anything TOML cannot read is taken as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set dynamics.temperature=1e-4")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(raw: Config, overrides: Iterable[str]) -> Config:
    """``raw`` with each ``KEY=VALUE`` applied (``sweep.<dotted key>=[...]`` sets a sweep axis)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("sweep."):
            out.setdefault("sweep", {})[key[len("sweep."):]] = value
            continue
        sec, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"--set {text!r}: the key must be section.key (e.g. run.steps)"
                              f"{suggest(key, all_keys())}")
        if sec not in SECTIONS:
            raise ConfigError(f"--set {text!r}: unknown section [{sec}]{suggest(sec, SECTIONS)}")
        section = out.setdefault(sec, {})
        if not isinstance(section, dict):
            raise ConfigError(f"--set {text!r}: [{sec}] is not a table in the config")
        section[name] = value
    return out


def load_config(path: str | Path | Config | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read, override, fill defaults and validate a config; returns the resolved config dict.

    ``path`` is a TOML file, an already-parsed dict (e.g. the ``config`` stored in an archive) or None
    (all defaults). Relative ``data.path`` / ``run.init_from`` are taken relative to the file's folder.
    """
    if path is None:
        raw, base = {}, Path.cwd()
    elif isinstance(path, dict):
        raw, base = copy.deepcopy(path), Path.cwd()
    else:
        raw, base = read_toml(path), Path(path).resolve().parent
    raw = apply_overrides(raw, overrides)
    return resolve(raw, base)


# -- validation ----------------------------------------------------------------------------------------------


def resolve(raw: Config, base: Path | None = None) -> Config:
    """Check ``raw`` against :func:`config_schema`, fill defaults, resolve relative paths and check the
    rules that involve several keys at every sweep point."""
    base = base or Path.cwd()
    raw = _numbers_as_floats(raw)
    stages = raw.pop("stages", None)
    problem = first_violation(_schema(), raw)
    if problem is not None:
        raise ConfigError(_message(problem, raw))
    cfg = default_config()
    for sec in SCHEMA:
        cfg[sec].update(copy.deepcopy(raw.get(sec) or {}))
    cfg["sweep"] = copy.deepcopy(raw.get("sweep") or {})
    _resolve_paths(cfg, base)
    for point in sweep_points(cfg):
        check_consistency(point_config(cfg, point))
    if stages is not None:
        cfg["stages"] = _resolve_stages(stages, raw, base)
    return cfg


# -- multi-stage protocols -----------------------------------------------------------------------------------

#: what a ``[[stages]]`` table may set: the rest of the config is shared by every stage
STAGE_KEYS = ("name", "steps", "dynamics", "snapshots", "metrics", "sweep")
STAGE_SECTIONS = ("dynamics", "snapshots", "metrics")
_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")


def _stage_refusal(where: str, what: str) -> ConfigError:
    if what == "model":
        return ConfigError(f"{where}: a stage cannot change the architecture ([model]): it starts from the "
                           "previous stage's parameters; set [model] (and any model sweep) at the top level")
    return ConfigError(f"{where}: a stage cannot change [{what}]: every stage trains on the same data; set "
                       f"[{what}] at the top level")


def _resolve_stages(stages: Any, raw: Config, base: Path) -> list[dict[str, Any]]:
    """The checked ``[[stages]]`` list: each stage's overrides (numbers normalised), every stage's resolved
    config validated at each of its sweep points."""
    if not isinstance(stages, list) or not stages or not all(isinstance(st, dict) for st in stages):
        raise ConfigError("stages must be an array of tables: one [[stages]] header per stage (name = \"...\", "
                          "steps = N, [stages.dynamics] ...)")
    out: list[dict[str, Any]] = []
    swept = dict(raw.get("sweep") or {})
    for i, st in enumerate(stages):
        name = st.get("name", f"stage{i}")
        where = f"stages[{i}]" + (f" ({name!r})" if "name" in st else "")
        if not isinstance(name, str) or not _STAGE_NAME.fullmatch(name):
            raise ConfigError(f"{where}: name = {name!r} must be a non-empty file-name-safe string (letters, "
                              "digits, _ . + = -); it names the stage's folder")
        if name in [o["name"] for o in out]:
            raise ConfigError(f"{where}: the name {name!r} is used by an earlier stage; give each stage its own")
        for key, value in st.items():
            if key in ("model", "data"):
                raise _stage_refusal(where, key)
            if key not in STAGE_KEYS:
                raise ConfigError(f"{where}: unknown stage key {key!r}{suggest(key, STAGE_KEYS)}; a stage may set "
                                  "name, steps, [stages.dynamics], [stages.snapshots], [stages.metrics] and "
                                  "[stages.sweep]")
            if key in (*STAGE_SECTIONS, "sweep") and not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} must be a table ([stages.{key}] under the stage's [[stages]])")
        own = st.get("sweep") or {}
        for key in own:
            sec = key.partition(".")[0]
            if sec in ("model", "data"):
                raise _stage_refusal(f"{where} sweep {key!r}", sec)
            if key in swept:
                raise ConfigError(f"{where}: sweep {key!r} is already swept (at the top level or by an earlier "
                                  "stage, whose axes carry on); sweep it once")
        for sec in STAGE_SECTIONS:
            for k in st.get(sec) or {}:
                if f"{sec}.{k}" in swept or f"{sec}.{k}" in own:
                    raise ConfigError(f"{where}: {sec}.{k} is set by the stage and swept; drop one of them")
        swept.update(own)
        stage_raw = copy.deepcopy(raw)
        for sec in STAGE_SECTIONS:
            stage_raw[sec] = {**(stage_raw.get(sec) or {}), **(st.get(sec) or {})}
        if "steps" in st:
            stage_raw["run"] = {**(stage_raw.get("run") or {}), "steps": st["steps"]}
        stage_raw["sweep"] = dict(swept)
        try:
            resolved = resolve(stage_raw, base)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        entry: dict[str, Any] = {"name": name}
        if "steps" in st:
            entry["steps"] = resolved["run"]["steps"]
        for sec in STAGE_SECTIONS:
            if st.get(sec):
                entry[sec] = {k: resolved[sec][k] for k in st[sec]}
        if own:
            entry["sweep"] = {k: resolved["sweep"][k] for k in own}
        out.append(entry)
    return out


def stage_config(cfg: Config, index: int) -> Config:
    """The resolved config of stage ``index`` of a multi-stage ``cfg``: the shared config with the stage's
    ``steps``, ``[dynamics]``, ``[snapshots]`` and ``[metrics]`` overrides, swept over the top-level axes and
    those of the stages up to this one (a stage's axes carry on to the later stages); no ``stages`` key."""
    stages = cfg["stages"]
    out = copy.deepcopy({k: v for k, v in cfg.items() if k != "stages"})
    st = stages[index]
    for sec in STAGE_SECTIONS:
        out[sec].update(copy.deepcopy(st.get(sec) or {}))
    if "steps" in st:
        out["run"]["steps"] = st["steps"]
    for earlier in stages[:index + 1]:
        out["sweep"].update(copy.deepcopy(earlier.get("sweep") or {}))
    return out


def _numbers_as_floats(raw: Config) -> Config:
    """``raw`` with integers given for float keys made floats (``lr = 1`` is ``1.0``), sweeps included."""
    out = dict(raw)
    for sec, keys in SCHEMA.items():
        body = raw.get(sec)
        if isinstance(body, dict):
            out[sec] = {k: _as_float(v) if k in keys and keys[k].type.startswith("float") else v
                        for k, v in body.items()}
    sweep = raw.get("sweep")
    if isinstance(sweep, dict):
        out["sweep"] = {k: [_as_float(x) for x in v] if isinstance(v, list) and _is_float_key(k) else v
                        for k, v in sweep.items()}
    return out


def _as_float(v: Any) -> Any:
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _is_float_key(dotted: str) -> bool:
    sec, _, name = dotted.partition(".")
    return name in SCHEMA.get(sec, {}) and SCHEMA[sec][name].type.startswith("float")


def _message(v: Violation, raw: Config) -> str:
    """The one-line error of a broken rule of :func:`config_schema`."""
    path = v.path
    if not path:
        if v.rule != "additionalProperties":
            return "a config must be a table of sections such as [run]"
        sec = str(v.value)
        if not isinstance(raw[sec], dict):
            return f"unknown top-level key {sec!r}{suggest(sec, all_keys())}; keys live in sections such as [run]"
        return f"unknown config section [{sec}]{suggest(sec, SECTIONS)}"
    sec = path[0]
    if sec == "sweep":
        if len(path) == 1:
            if v.rule != "additionalProperties":
                return "[sweep] must be a table (a [sweep] header followed by \"section.key\" = [values] lines)"
            key = str(v.value)
            if key.startswith("sweep."):
                return f"sweep {key!r}: cannot sweep the sweep itself"
            return f"sweep: unknown config key {key!r}{suggest(key, all_keys())}"
        key = path[1]
        values = raw["sweep"][key]
        if len(path) == 2:
            if v.rule == "uniqueItems":
                return f"sweep {key!r}: values repeat ({values}); list each value once"
            return f"sweep {key!r}: give a non-empty list of values, e.g. \"{key}\" = [a, b]"
        sec_, _, name = key.partition(".")
        return _value_message(f"sweep {key}", SCHEMA[sec_][name], v, values[path[2]])
    if len(path) == 1:
        if v.rule == "additionalProperties":
            name = f"{sec}.{v.value}"
            return f"unknown config key {name}{suggest(name, all_keys())}"
        return f"[{sec}] must be a table (a [{sec}] header followed by key = value lines)"
    return _value_message(f"{sec}.{path[1]}", SCHEMA[sec][path[1]], v, raw[sec][path[1]])


def _value_message(name: str, key: Key, v: Violation, whole: Any) -> str:
    """``name`` broke ``v``: its type (the whole value shown), finiteness, choices or range (the element)."""
    value = v.value
    if v.rule == "finite":
        return f"{name} must be a finite number, got {value!r}"
    if v.rule == "type":
        return f"{name} must be {_TYPE_WORDS[key.type.rstrip('?')]}, got {whole!r}"
    if v.rule == "enum":
        choices = key.choices or ()
        return f"{name} = {value!r} is not one of {', '.join(choices)}{suggest(value, choices)}"
    op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}.get(v.rule)
    if op is None:
        return f"{name} = {whole!r} breaks the rule {v.rule} = {v.limit!r}"
    return f"{name} = {value!r} is out of range: must be {op} {v.limit:g}"


def _resolve_paths(cfg: Config, base: Path) -> None:
    for key in ("path", "root"):
        if cfg["data"][key] is not None:
            cfg["data"][key] = str((base / Path(cfg["data"][key]).expanduser()).resolve())
    init = cfg["run"]["init_from"]
    if init is not None:
        path, at, step = init.rpartition("@") if "@" in init else (init, "", "")
        cfg["run"]["init_from"] = str((base / Path(path).expanduser()).resolve()) + (at + step)


def check_consistency(cfg: Config) -> None:
    """Rules that involve several keys (checked for every sweep point before anything runs)."""
    dyn, model, snaps, run = cfg["dynamics"], cfg["model"], cfg["snapshots"], cfg["run"]
    if dyn["kind"] != "sgd" and dyn["momentum"] != 0:
        raise ConfigError(f"dynamics.momentum = {dyn['momentum']} applies to sgd only; set it to 0 for "
                          f"dynamics.kind = {dyn['kind']!r}")
    if dyn["kind"] != "langevin" and dyn["temperature"] != 0:
        raise ConfigError(f"dynamics.temperature = {dyn['temperature']} applies to langevin only; set "
                          f"dynamics.kind = \"langevin\" or temperature = 0")
    if model["kind"] == "cnn" and model["kernel_size"] % 2 == 0:
        raise ConfigError(f"model.kernel_size = {model['kernel_size']} must be odd (padding keeps the size)")
    if model["kind"] == "cnn" and model["n_params"] is not None:
        raise ConfigError("model.n_params applies to mlp and rnn (it chooses their width), not model.kind = "
                          "\"cnn\"; set model.channels instead")
    if model["kind"] == "cnn" and not model["channels"]:
        raise ConfigError("model.channels must list at least one conv layer for model.kind = \"cnn\"")
    if cfg["data"]["name"] == "bach_chorales" and model["kind"] != "rnn":
        raise ConfigError(f"data.name = \"bach_chorales\" needs model.kind = \"rnn\" (next-step prediction of "
                          f"the four voices), not {model['kind']!r}")
    if model["kind"] == "rnn" and model["cell"] != "tanh" and model["activation"] not in ("auto", "tanh"):
        raise ConfigError(f"model.activation = {model['activation']!r} applies to model.cell = \"tanh\" only; "
                          f"use activation = \"auto\" with cell = {model['cell']!r}")
    if cfg["data"]["name"] == "npz" and not cfg["data"]["path"]:
        raise ConfigError("data.path is required for data.name = \"npz\" (a file with X_train, y_train, "
                          "X_test, y_test)")
    if cfg["data"]["name"] in ("mnist", "fashion_mnist", "cifar10") and not cfg["data"]["root"]:
        raise ConfigError(f"data.root is required for data.name = {cfg['data']['name']!r}: the folder holding the "
                          "dataset's standard files (nothing is downloaded)")
    if snaps["schedule"] == "log" and snaps["start"] > run["steps"]:
        raise ConfigError(f"snapshots.start = {snaps['start']} is beyond run.steps = {run['steps']}")
    if snaps["schedule"] == "explicit":
        if not snaps["steps"]:
            raise ConfigError("snapshots.steps must list the snapshot steps for schedule = \"explicit\"")
        late = [s for s in snaps["steps"] if s > run["steps"]]
        if late:
            raise ConfigError(f"snapshots.steps has {late[0]} > run.steps = {run['steps']}; drop it or raise "
                              "run.steps")
    init = run["init_from"]
    if init is not None and "@" in init:
        at = init.rpartition("@")[2]
        if not (at == "last" or at.isdigit()):
            raise ConfigError(f"run.init_from = {init!r}: the part after @ must be a step number or 'last'")
    dev = run["device"]
    if not is_device_name(dev) or dev == "auto":
        raise ConfigError(f"run.device = {dev!r}: use cpu, cuda or cuda:K")


# -- sweep points --------------------------------------------------------------------------------------------


def sweep_points(cfg: Config) -> list[dict[str, Any]]:
    """The Cartesian product of the sweep axes, in the order the axes are listed (last varies fastest).

    Each point is ``{dotted_key: value}``; no sweep gives one empty point.
    """
    points: list[dict[str, Any]] = [{}]
    for key, values in cfg["sweep"].items():
        points = [{**p, key: v} for p in points for v in values]
    return points


def point_config(cfg: Config, coords: dict[str, Any]) -> Config:
    """The resolved config of one sweep point: ``cfg`` with ``coords`` applied and no sweep."""
    out = copy.deepcopy(cfg)
    out["sweep"] = {}
    for key, value in coords.items():
        sec, _, name = key.partition(".")
        out[sec][name] = copy.deepcopy(value)
    return out


def replica_config(point_cfg: Config, replica: int) -> Config:
    """The config that reproduces replica ``replica`` of a point on its own.

    Replica r of a point with seed s is the run with seed ``s + r`` and one replica; ``{replica}`` in
    ``run.init_from`` is filled in.
    """
    out = copy.deepcopy(point_cfg)
    out["run"]["seed"] = point_cfg["run"]["seed"] + replica
    out["run"]["replicas"] = 1
    if out["run"]["init_from"]:
        out["run"]["init_from"] = fill_replica(out["run"]["init_from"], replica)
    return out


def fill_replica(text: str, replica: int) -> str:
    """``text`` with ``{replica}`` or ``{replica:02d}`` (any format spec) replaced by the replica index."""
    return re.sub(r"\{replica(?::([^}]*))?\}", lambda m: format(replica, m.group(1) or ""), text)


def config_diff(a: Config, b: Config, ignore: Iterable[str] = ()) -> str | None:
    """The first dotted key whose value differs between two configs, as ``"key: a vs b"``, or None.

    A key that one config lacks (recorded before the key existed) matches its default."""
    ignore = set(ignore)
    for sec in SECTIONS:
        sa, sb = a.get(sec) or {}, b.get(sec) or {}
        for k in sorted(set(sa) | set(sb)):
            if f"{sec}.{k}" in ignore:
                continue
            key = SCHEMA.get(sec, {}).get(k)
            default = key.default if key is not None else None
            va, vb = sa.get(k, default), sb.get(k, default)
            if va != vb:
                return f"{sec}.{k}: {va!r} vs {vb!r}"
    return None
