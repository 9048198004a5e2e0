"""The ``bach_chorales`` dataset: four-part Bach chorales from music21's corpus, as next-step prediction.

No download: the chorales are the ``music21/corpus/bach/*.mxl`` files that the optional ``music21``
package ships (``pip install "trajkit[music]"``). Only scores with exactly four parts (soprano, alto,
tenor, bass, in score order) are used; the others are skipped and listed in the encoding record.

**Quantisation.** ``quantisation = "sixteenth"`` (default; step q = ¼ quarter note) or ``"eighth"``
(q = ½). Ties are merged (``stripTies``); a note of onset o and duration d (quarter lengths) occupies the
grid steps ``[⌊o/q + ½⌋, ⌊(o + d)/q + ½⌋)``. A note that covers no step (shorter than the grid after
rounding; grace notes) is *dropped*, as are all but the highest pitch of a chord inside one voice and a
note whose rounded onset equals the previous one's; a note that would overlap the next is cut at the
next onset. The number of dropped notes is warned about (``strict = true``: refused). The result, per
voice a tuple of :class:`Note` ``(onset, end, pitch)`` in steps and MIDI numbers, is the *quantised
score* (:class:`QuantisedChorale`); rests are the gaps.

**Encoding** (:func:`encode`, inverse :func:`decode`). Time step k of a chorale is four tokens, one per
voice v: ``0`` = rest, ``1`` = hold (the note sounding at k started earlier), ``2 + p − low_v`` = a note
of MIDI pitch p starting at k. The vocabulary of voice v is its range ``[low_v, high_v]`` over the
chorales used (train and test, before transposition); all voices share ``V = 2 + max_v(high_v − low_v + 1)``
token values (a voice's unused values never occur as targets).

**Samples.** Each chorale's ``[T, 4]`` token array is cut into non-overlapping windows of ``L + 1`` steps
(``L = seq_len``; windows start at 0, L, 2L, …; the remainder is dropped): the input is steps 0..L−1 as
one-hot ``[L, 4, V]`` (flattened to ``D = 4·L·V`` float32), the targets are steps 1..L ``[L, 4]`` int64.
The network predicts the four voices of the next step from the steps so far (an RNN reading
``[L, C, V]`` samples, see :mod:`trajkit.experiments.models`); the loss is the NLL per time step and voice.

**Split.** By chorale: a permutation from ``data.seed`` puts ``max(1, round(test_fraction·n))`` of the n
chorales in the test set. ``transpositions = k`` adds each training chorale shifted by ``s = ±1..±k``
semitones when every voice stays within its range (the test set is never transposed). ``n_train`` /
``n_test`` subsample windows (seeded, order kept).

**Cache.** Parsing is slow (≈ 0.1 s a score), so the quantised corpus is cached as
``$TRAJKIT_CACHE_DIR/chorales-<hash>.npz`` (default ``~/.cache/trajkit``), the hash covering the music21
version, the corpus file list (names and sizes), the quantisation, the number of chorales and the cache
format. Never in an archive: archives record the spec, and the spec's ``encoding`` (vocabulary, grid,
chorale names of each split, music21 version, corpus hash) is checked on rebuild.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.cachedir import cache_dir as trajkit_cache_dir
from trajkit.errors import ConfigError
from trajkit.models.data import Dataset

VOICES = ("soprano", "alto", "tenor", "bass")
GRIDS = {"sixteenth": 0.25, "eighth": 0.5}  # quarter lengths per time step
REST, HOLD, PITCH0 = 0, 1, 2
CACHE_FORMAT = 1
INSTALL_HINT = 'data.name = "bach_chorales" needs the optional music21 package: pip install "trajkit[music]"'


class QuantisationWarning(UserWarning):
    """The grid dropped notes of the chorales (see the module docstring)."""


@dataclass(frozen=True)
class Note:
    """A note of one voice on the grid: steps ``[onset, end)``, MIDI ``pitch``."""

    onset: int
    end: int
    pitch: int


@dataclass(frozen=True)
class QuantisedChorale:
    """A chorale on the grid: ``voices`` (4 tuples of :class:`Note`, soprano first), ``length`` T in steps,
    and the number of notes the quantisation ``dropped``."""

    name: str
    length: int
    voices: tuple[tuple[Note, ...], ...]
    dropped: int = 0

    def pitches(self) -> np.ndarray:
        """Every MIDI pitch of each voice: a list of int arrays."""
        return [np.array([n.pitch for n in v], dtype=np.int64) for v in self.voices]

    def transposed(self, semitones: int) -> QuantisedChorale:
        """The chorale shifted by ``semitones``."""
        return QuantisedChorale(f"{self.name}{semitones:+d}", self.length,
                                tuple(tuple(Note(n.onset, n.end, n.pitch + semitones) for n in v) for v in self.voices),
                                self.dropped)


def require_music21():
    """The ``music21`` module, or a one-line ConfigError with the install hint."""
    try:
        import music21
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return music21


def corpus_files() -> list[Path]:
    """The ``.mxl`` Bach files of music21's corpus, sorted by name."""
    m21 = require_music21()
    return sorted((Path(m21.__file__).parent / "corpus" / "bach").glob("*.mxl"))


# -- quantisation and encoding ------------------------------------------------------------------------------


def _step(x: float, q: float) -> int:
    return math.floor(x / q + 0.5)


def quantise_part(events: list[tuple[float, float, list[int]]], q: float) -> tuple[tuple[Note, ...], int]:
    """One voice on the grid of ``q`` quarter lengths: ``events`` ``(offset, duration, [midi pitches])``
    (sorted by offset, rests excluded) → ``(notes, dropped)`` by the rules of the module docstring."""
    notes: list[Note] = []
    dropped = 0
    for offset, duration, pitches in events:
        dropped += max(len(pitches) - 1, 0)
        k0, k1 = _step(offset, q), _step(offset + duration, q)
        if k1 <= k0 or not pitches or (notes and k0 <= notes[-1].onset):
            dropped += 1 if pitches else 0
            continue
        if notes and notes[-1].end > k0:
            notes[-1] = Note(notes[-1].onset, k0, notes[-1].pitch)
        notes.append(Note(k0, k1, max(pitches)))
    return tuple(notes), dropped


def quantise_score(score: Any, quantisation: str = "sixteenth", name: str = "") -> QuantisedChorale | None:
    """The quantised score of a music21 ``Score`` with four parts (None for any other number of parts)."""
    q = GRIDS[quantisation]
    parts = list(score.parts)
    if len(parts) != 4:
        return None
    voices, dropped, end = [], 0, _step(float(score.highestTime), q)
    for part in parts:
        events = []
        for el in part.stripTies().flatten().notes:
            pitches = [int(p.midi) for p in el.pitches]
            events.append((float(el.offset), float(el.quarterLength), pitches))
        events.sort(key=lambda e: e[0])
        notes, d = quantise_part(events, q)
        voices.append(notes)
        dropped += d
        if notes:
            end = max(end, notes[-1].end)
    return QuantisedChorale(name, end, tuple(voices), dropped)


def encode(chorale: QuantisedChorale, vocabulary: dict[str, list[int]]) -> np.ndarray:
    """Tokens int64 ``[T, 4]`` of a quantised chorale (rest 0, hold 1, onset ``2 + p − low_v``)."""
    tokens = np.full((chorale.length, len(VOICES)), REST, dtype=np.int64)
    for v, (voice, notes) in enumerate(zip(VOICES, chorale.voices, strict=True)):
        low, high = vocabulary[voice]
        for n in notes:
            if not low <= n.pitch <= high:
                raise ConfigError(f"chorale {chorale.name}: {voice} pitch {n.pitch} is outside the vocabulary "
                                  f"[{low}, {high}]")
            tokens[n.onset, v] = PITCH0 + n.pitch - low
            tokens[n.onset + 1:n.end, v] = HOLD
    return tokens


def decode(tokens: np.ndarray, vocabulary: dict[str, list[int]], name: str = "") -> QuantisedChorale:
    """The quantised chorale of tokens ``[T, 4]`` (inverse of :func:`encode`; ``dropped = 0``)."""
    tokens = np.asarray(tokens)
    voices = []
    for v, voice in enumerate(VOICES):
        low = vocabulary[voice][0]
        notes: list[Note] = []
        onset = pitch = None
        for k, tok in enumerate(tokens[:, v].tolist()):
            if tok == HOLD and onset is not None:
                continue
            if onset is not None:
                notes.append(Note(onset, k, pitch))
                onset = None
            if tok >= PITCH0:
                onset, pitch = k, low + tok - PITCH0
            elif tok == HOLD:
                raise ConfigError(f"decode: {voice} holds at step {k} with no note sounding")
        if onset is not None:
            notes.append(Note(onset, len(tokens), pitch))
        voices.append(tuple(notes))
    return QuantisedChorale(name, len(tokens), tuple(voices))


def voice_ranges(chorales: list[QuantisedChorale]) -> dict[str, list[int]]:
    """``{voice: [low, high]}`` MIDI range of each voice over ``chorales``."""
    out = {}
    for v, voice in enumerate(VOICES):
        ps = np.concatenate([c.pitches()[v] for c in chorales] or [np.zeros(0, np.int64)])
        if ps.size == 0:
            raise ConfigError(f"bach_chorales: the {voice} has no notes in the chosen chorales")
        out[voice] = [int(ps.min()), int(ps.max())]
    return out


def n_tokens(vocabulary: dict[str, list[int]]) -> int:
    """V: the token values shared by the voices."""
    return PITCH0 + max(high - low + 1 for low, high in vocabulary.values())


# -- the parsed corpus and its cache -------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$TRAJKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/trajkit``, else ``~/.cache/trajkit``."""
    return trajkit_cache_dir()


def corpus_key(quantisation: str, chorales: int | None) -> dict[str, Any]:
    """What the cached corpus depends on: music21 version, file list (names, sizes), options."""
    m21 = require_music21()
    files = [[f.name, f.stat().st_size] for f in corpus_files()]
    return {"format": CACHE_FORMAT, "music21": str(m21.__version__), "files": files,
            "quantisation": quantisation, "chorales": chorales}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def parse_corpus(quantisation: str = "sixteenth", chorales: int | None = None
                 ) -> tuple[list[QuantisedChorale], list[list[str]]]:
    """Parse the corpus (no cache): the first ``chorales`` four-part chorales in file order, quantised,
    and ``[[file, reason], ...]`` for the files skipped on the way."""
    m21 = require_music21()
    out: list[QuantisedChorale] = []
    skipped: list[list[str]] = []
    for f in corpus_files():
        if chorales is not None and len(out) >= chorales:
            break
        score = m21.converter.parse(f)
        q = quantise_score(score, quantisation, f.stem)
        if q is None:
            skipped.append([f.stem, f"{len(score.parts)} parts"])
            continue
        out.append(q)
    return out, skipped


def _save(path: Path, chorales: list[QuantisedChorale], skipped: list[list[str]], key: dict[str, Any]) -> None:
    rows = [(i, v, n.onset, n.end, n.pitch) for i, c in enumerate(chorales) for v, notes in enumerate(c.voices)
            for n in notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, notes=np.asarray(rows, dtype=np.int32).reshape(-1, 5),
                        names=np.asarray([c.name for c in chorales]),
                        lengths=np.asarray([c.length for c in chorales], dtype=np.int64),
                        dropped=np.asarray([c.dropped for c in chorales], dtype=np.int64),
                        meta=np.asarray(json.dumps({"key": key, "skipped": skipped})))
    os.replace(tmp, path)


def _load(path: Path) -> tuple[list[QuantisedChorale], list[list[str]]]:
    with np.load(path, allow_pickle=False) as z:
        notes, names, lengths, dropped = z["notes"], z["names"], z["lengths"], z["dropped"]
        meta = json.loads(str(z["meta"]))
    per: list[list[list[Note]]] = [[[] for _ in VOICES] for _ in names]
    for i, v, k0, k1, p in notes.tolist():
        per[i][v].append(Note(k0, k1, p))
    chorales = [QuantisedChorale(str(n), int(t), tuple(tuple(v) for v in voices), int(d))
                for n, t, d, voices in zip(names, lengths, dropped, per, strict=True)]
    return chorales, meta["skipped"]


def load_corpus(quantisation: str = "sixteenth", chorales: int | None = None, cache: bool = True
                ) -> tuple[list[QuantisedChorale], list[list[str]], str]:
    """The quantised chorales, the skipped files and the corpus hash; read from the cache when it holds
    them, else parsed and written there (a cache that cannot be written is skipped silently)."""
    key = corpus_key(quantisation, chorales)
    digest = _digest(key)
    path = cache_dir() / f"chorales-{digest[:20]}.npz"
    if cache and path.is_file():
        try:
            out, skipped = _load(path)
            return out, skipped, digest
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: parse again and overwrite it
    out, skipped = parse_corpus(quantisation, chorales)
    if cache:
        try:
            _save(path, out, skipped, key)
        except OSError:
            pass
    return out, skipped, digest


# -- the dataset -----------------------------------------------------------------------------------------------


def windows(tokens: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of ``L + 1`` steps of ``tokens [T, 4]``: inputs ``[n, L, 4]`` (steps
    0..L−1 of each window) and targets ``[n, L, 4]`` (steps 1..L)."""
    n = max((len(tokens) - 1) // seq_len, 0)
    starts = np.arange(n) * seq_len
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    w = tokens[idx] if n else np.zeros((0, seq_len + 1, tokens.shape[1]), dtype=tokens.dtype)
    return w[:, :-1], w[:, 1:]


def one_hot(tokens: np.ndarray, V: int) -> np.ndarray:
    """float32 ``[..., V]`` one-hot of int tokens ``[...]``."""
    out = np.zeros((*tokens.shape, V), dtype=np.float32)
    np.put_along_axis(out, tokens[..., None], 1.0, axis=-1)
    return out


def split_chorales(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(train, test)`` of n chorales: ``max(1, round(test_fraction·n))`` go to test."""
    if n < 2:
        raise ConfigError(f"bach_chorales: {n} four-part chorale(s) found; need at least 2 to split into train "
                          "and test (raise data.chorales)")
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    perm = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def transpositions(chorale: QuantisedChorale, k: int, vocabulary: dict[str, list[int]]) -> list[int]:
    """The shifts ``s ∈ {−k..k} \\ {0}`` that keep every voice of ``chorale`` inside its range."""
    ps = chorale.pitches()
    out = []
    for s in range(-k, k + 1):
        if s and all(p.size == 0 or (vocabulary[v][0] <= p.min() + s and p.max() + s <= vocabulary[v][1])
                     for v, p in zip(VOICES, ps, strict=True)):
            out.append(s)
    return out


def _subsample(n_keep: int | None, X: np.ndarray, y: np.ndarray, rng: np.random.Generator, what: str
               ) -> tuple[np.ndarray, np.ndarray]:
    if n_keep is None:
        return X, y
    if n_keep > len(X):
        raise ConfigError(f"data.{what} = {n_keep} exceeds the {len(X)} bach_chorales windows of that split; lower "
                          "it, lower data.seq_len or raise data.chorales")
    keep = np.sort(rng.permutation(len(X))[:n_keep])
    return X[keep], y[keep]


def build_chorales(spec: dict[str, Any]) -> Dataset:
    """The ``bach_chorales`` dataset of a :func:`~trajkit.experiments.datasets.dataset_spec` (see the module
    docstring); the returned ``spec`` holds the ``encoding`` record, compared with a stored one."""
    m21 = require_music21()
    quant, L = spec["quantisation"], int(spec["seq_len"])
    if quant not in GRIDS:
        raise ConfigError(f"data.quantisation = {quant!r} is not one of {', '.join(GRIDS)}")
    chorales, skipped, digest = load_corpus(quant, spec.get("chorales"))
    dropped = sum(c.dropped for c in chorales)
    if dropped:
        where = sum(c.dropped > 0 for c in chorales)
        text = (f"bach_chorales: the {quant} grid drops {dropped} notes in {where} of {len(chorales)} chorales "
                "(shorter than a step, or chord notes inside a voice)")
        if spec.get("strict"):
            raise ConfigError(f"{text}; data.strict = true refuses this: use data.quantisation = \"sixteenth\" "
                              "or strict = false")
        warnings.warn(f"{text}; set data.strict = true to refuse", QuantisationWarning, stacklevel=2)
    vocab = voice_ranges(chorales)
    V = n_tokens(vocab)
    train_idx, test_idx = split_chorales(len(chorales), float(spec["test_fraction"]), int(spec["seed"]))
    k = int(spec.get("transpositions") or 0)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    n_transposed = 0
    for split, idx in (("train", train_idx), ("test", test_idx)):
        for i in idx:
            c = chorales[int(i)]
            versions = [c]
            if split == "train" and k:
                versions += [c.transposed(s) for s in transpositions(c, k, vocab)]
                n_transposed += len(versions) - 1
            parts[split] += [windows(encode(v, vocab), L) for v in versions]
    arrays = {}
    rng = np.random.default_rng([int(spec["seed"]), 8])
    for split in ("train", "test"):
        xs = np.concatenate([a for a, _ in parts[split]]) if parts[split] else np.zeros((0, L, 4), np.int64)
        ys = np.concatenate([b for _, b in parts[split]]) if parts[split] else np.zeros((0, L, 4), np.int64)
        if len(xs) == 0:
            raise ConfigError(f"bach_chorales: no {split} chorale is longer than data.seq_len + 1 = {L + 1} steps; "
                              "lower data.seq_len")
        xs, ys = _subsample(spec.get(f"n_{split}"), xs, ys, rng, f"n_{split}")
        arrays[split] = (one_hot(xs, V).reshape(len(xs), -1), ys.astype(np.int64))
    encoding = {
        "voices": list(VOICES), "quantisation": quant, "quarter_length_per_step": GRIDS[quant],
        "tokens": {"rest": REST, "hold": HOLD, "note": "2 + midi - low[voice]"}, "vocabulary": vocab,
        "n_tokens": V, "input": "one-hot [seq_len, 4, n_tokens] of steps 0..L-1 of each window",
        "target": "tokens [seq_len, 4] of steps 1..L", "music21": str(m21.__version__), "corpus_sha256": digest,
        "chorales_train": [chorales[int(i)].name for i in train_idx],
        "chorales_test": [chorales[int(i)].name for i in test_idx],
        "transposed_copies": n_transposed, "skipped": skipped, "dropped_notes": dropped,
    }
    stored = spec.get("encoding")
    if stored is not None and stored != encoding:
        diff = next((k for k in sorted(set(stored) | set(encoding)) if stored.get(k) != encoding.get(k)), "?")
        raise ConfigError(f"dataset.spec encoding: the rebuilt bach_chorales differ from the recorded ones in "
                          f"{diff!r} (recorded {str(stored.get(diff))[:60]}, now {str(encoding.get(diff))[:60]}); "
                          f"use music21 {stored.get('music21')} as when the run was recorded")
    (Xtr, ytr), (Xte, yte) = arrays["train"], arrays["test"]
    return Dataset("bach_chorales", Xtr, ytr, Xte, yte, (L, len(VOICES), V), V, spec={"encoding": encoding})
