"""The ``bach_chorales`` dataset: quantisation rules, the token encoding and its inverse, the split by chorale,
transpositions, the parse cache, dropped notes under ``strict``, and the install hint without music21."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from trajkit.errors import ConfigError
from trajkit.experiments import chorales as ch
from trajkit.experiments.chorales import Note, QuantisedChorale, decode, encode, quantise_part
from trajkit.experiments.datasets import build_dataset, dataset_spec

needs_music21 = pytest.mark.skipif(importlib.util.find_spec("music21") is None,
                                   reason="music21 (the trajkit[music] extra) is not installed")
N_CHORALES = 6
DATA = {"name": "bach_chorales", "chorales": N_CHORALES, "seed": 0, "test_fraction": 0.34, "seq_len": 16,
        "quantisation": "sixteenth", "transpositions": 0, "strict": False}


# -- pure rules (no music21) ----------------------------------------------------------------------------------

EVENTS = [(0.0, 1.0, [60]), (1.0, 0.75, [62]), (1.75, 0.25, [64]), (2.0, 1.0, [65, 69])]


def test_quantise_part_on_both_grids():
    # sixteenths (q = 1/4 quarter): every note fits; the chord keeps its top pitch, its other note is dropped
    notes, dropped = quantise_part(EVENTS, 0.25)
    assert notes == (Note(0, 4, 60), Note(4, 7, 62), Note(7, 8, 64), Note(8, 12, 69)) and dropped == 1
    # eighths (q = 1/2): the dotted eighth spans steps [2, 4) (3.5 rounds up), the sixteenth at 1.75 covers no step
    notes, dropped = quantise_part(EVENTS, 0.5)
    assert notes == (Note(0, 2, 60), Note(2, 4, 62), Note(4, 6, 69)) and dropped == 2


VOCAB = {"soprano": [60, 64], "alto": [55, 60], "tenor": [50, 55], "bass": [40, 45]}


def test_encoding_by_hand_and_back():
    c = QuantisedChorale("x", 5, ((Note(0, 3, 64), Note(3, 4, 64)), (Note(1, 5, 55),), (), (Note(0, 2, 45),)))
    tokens = encode(c, VOCAB)
    want = np.array([[2 + 4, 0, 0, 2 + 5],     # soprano E4 = 2 + 64 − 60; alto rests; bass A2 = 2 + 45 − 40
                     [1, 2 + 0, 0, 1],         # holds; alto G3 = 2 + 55 − 55 starts
                     [1, 1, 0, 0],
                     [2 + 4, 1, 0, 0],         # the same pitch struck again is a new onset, not a hold
                     [0, 1, 0, 0]])
    np.testing.assert_array_equal(tokens, want)
    assert decode(tokens, VOCAB, "x") == c
    assert ch.n_tokens(VOCAB) == 2 + 6
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        encode(QuantisedChorale("y", 1, ((Note(0, 1, 70),), (), (), ())), VOCAB)


def test_missing_music21_gives_one_line_install_hint(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "bach_chorales"\n[model]\nkind = "rnn"\n')
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["music21"] = None          # as if the extra were not installed
        from trajkit.cli import main
        sys.argv = ["trajkit", "record", "--config", {str(cfg)!r}, "--out", {str(out)!r}]
        main()
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "trajkit[music]"' in lines[0], r.stderr
    assert not out.exists()


# -- the corpus (music21) ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(chorale_cache):
    if importlib.util.find_spec("music21") is None:
        pytest.skip("music21 (the trajkit[music] extra) is not installed")
    return {q: ch.load_corpus(q, N_CHORALES)[0] for q in ("sixteenth", "eighth")}


@needs_music21
def test_round_trip_and_note_count_against_music21(corpus):
    import music21

    files = {f.stem: f for f in ch.corpus_files()}
    for chorales in corpus.values():
        assert len(chorales) == N_CHORALES
        vocab = ch.voice_ranges(chorales)
        for c in chorales:
            tokens = encode(c, vocab)
            assert tokens.shape == (c.length, 4)
            assert decode(tokens, vocab, c.name) == QuantisedChorale(c.name, c.length, c.voices, 0)
    # independently of our quantiser: every tied-merged music21 note is either kept or counted as dropped
    for c in corpus["sixteenth"][:2]:
        score = music21.converter.parse(files[c.name])
        n_notes = sum(len(el.pitches) for p in score.parts for el in p.stripTies().flatten().notes)
        assert sum(len(v) for v in c.voices) + c.dropped == n_notes
        assert c.length == int(score.highestTime * 4)


@needs_music21
def test_dataset_rebuilds_exactly_and_splits_by_chorale(corpus):
    spec = dataset_spec(DATA)
    a, b = build_dataset(spec), build_dataset(spec)
    for k in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    enc = a.spec["encoding"]
    assert a.spec == b.spec and a.input_shape == (16, 4, enc["n_tokens"]) and a.n_classes == enc["n_tokens"]
    names = [c.name for c in corpus["sixteenth"]]
    assert sorted(enc["chorales_train"] + enc["chorales_test"]) == sorted(names)
    assert len(enc["chorales_test"]) == round(0.34 * N_CHORALES)
    # the inputs are the targets one step earlier: the one-hot of step t+1 of a window is the target of step t
    x = a.X_train.reshape(a.n_train, 16, 4, -1).argmax(-1)
    np.testing.assert_array_equal(x[:, 1:], a.y_train[:, :-1])
    # rebuilding from the recorded spec (encoding included) gives the same arrays
    np.testing.assert_array_equal(build_dataset(a.spec).X_test, a.X_test)
    other = build_dataset(dataset_spec({**DATA, "seed": 1}))
    assert other.spec["encoding"]["chorales_test"] != enc["chorales_test"]
    with pytest.raises(ConfigError, match="differ from the recorded ones in 'vocabulary'"):
        build_dataset({**a.spec, "encoding": {**enc, "vocabulary": {**enc["vocabulary"], "bass": [0, 1]}}})


@needs_music21
def test_transpositions_augment_train_only_within_range(corpus):
    plain = build_dataset(dataset_spec(DATA))
    aug = build_dataset(dataset_spec({**DATA, "transpositions": 2}))
    vocab = plain.spec["encoding"]["vocabulary"]
    train = [c for c in corpus["sixteenth"] if c.name in plain.spec["encoding"]["chorales_train"]]
    shifts = sum(len(ch.transpositions(c, 2, vocab)) for c in train)
    assert aug.spec["encoding"]["transposed_copies"] == shifts > 0
    per_chorale = [len(ch.windows(encode(c, vocab), 16)[0]) for c in train]
    expected = sum(n * (1 + len(ch.transpositions(c, 2, vocab))) for c, n in zip(train, per_chorale, strict=True))
    assert aug.n_train == expected and plain.n_train == sum(per_chorale)
    np.testing.assert_array_equal(aug.X_test, plain.X_test)


@needs_music21
def test_cache_hit_and_dropped_notes(corpus, chorale_cache, monkeypatch):
    files = sorted(chorale_cache.glob("chorales-*.npz"))
    assert len(files) == 2                   # one per quantisation, in $TRAJKIT_CACHE_DIR
    monkeypatch.setattr(ch, "parse_corpus", lambda *a, **k: pytest.fail("cache miss: the corpus was parsed"))
    again = ch.load_corpus("eighth", N_CHORALES)[0]
    assert again == corpus["eighth"]
    dropped = sum(c.dropped for c in corpus["eighth"])
    assert dropped > 0                       # eighth notes cannot hold the chorales' sixteenth-note passing notes
    with pytest.warns(ch.QuantisationWarning, match=f"drops {dropped} notes"):
        build_dataset(dataset_spec({**DATA, "quantisation": "eighth"}))
    with pytest.raises(ConfigError, match=f"drops {dropped} notes.*strict = true refuses") as e:
        build_dataset(dataset_spec({**DATA, "quantisation": "eighth", "strict": True}))
    assert "\n" not in str(e.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # no note is lost on the sixteenth grid of these chorales
        build_dataset(dataset_spec({**DATA, "strict": True}))
