"""The offline QA tokenizer: ALBERT's special-token layout, offsets into the context, caching."""
from __future__ import annotations

import pytest

from models import tokenizer as tk
from models.errors import PayloadError
from models.tokenizer import QATokenizer
from tests.models_samples import QA_CONTEXT, QA_QUESTION


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOVER_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_pair_layout_matches_albert(cache):
    tok = QATokenizer.load(64)
    enc = tok.encode(QA_QUESTION, QA_CONTEXT)
    assert tok.vocab_size <= 30000
    assert len(enc.input_ids) == len(enc.token_type_ids) == len(enc.attention_mask) == 64
    assert enc.input_ids[0] == 2  # [CLS]
    n_real = sum(enc.attention_mask)
    assert enc.input_ids[n_real - 1] == 3  # final [SEP]
    assert enc.input_ids[n_real:] == [0] * (64 - n_real)  # <pad>
    first_ctx = enc.token_type_ids.index(1)
    assert enc.input_ids[first_ctx - 1] == 3  # [SEP] between question and context
    assert all(o is None for o in enc.context_offsets[:first_ctx])
    assert not enc.truncated


def test_context_offsets_cover_the_context_text(cache):
    enc = QATokenizer.load(128).encode(QA_QUESTION, QA_CONTEXT)
    spans = [o for o in enc.context_offsets if o is not None]
    assert spans[0][0] == 0 and spans[-1][1] == len(QA_CONTEXT)
    assert all(a < b <= c for (a, b), (c, _) in zip(spans, spans[1:]))  # ordered, non-overlapping
    words = {QA_CONTEXT[a:b] for a, b in spans}
    assert {"1788", "bridge", "river"} <= words  # corpus words stay whole


def test_long_context_is_truncated_and_long_question_refused(cache):
    tok = QATokenizer.load(32)
    assert tok.encode(QA_QUESTION, QA_CONTEXT * 5).truncated
    with pytest.raises(PayloadError, match="question too long"):
        tok.encode("why " * 60, QA_CONTEXT)


def test_fallback_is_trained_once_then_read_from_cache(cache, monkeypatch):
    first = tk.fallback_tokenizer()
    assert len(list(cache.glob("qa-tokenizer-*.json"))) == 1

    def no_training():
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(tk, "_train_fallback", no_training)
    second = tk.fallback_tokenizer()
    assert first.encode("the bridge opened").ids == second.encode("the bridge opened").ids


def test_tokenizer_json_in_weights_dir_is_preferred(cache, tmp_path):
    tk.fallback_tokenizer().save(str(tmp_path / "tokenizer.json"))
    tok = QATokenizer.load(64, weights_dir=tmp_path)
    assert tok.source == str(tmp_path)
    assert tok.encode(QA_QUESTION, QA_CONTEXT).input_ids[0] == 2


def test_weights_dir_without_tokenizer_is_a_clear_error(cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        QATokenizer.load(64, weights_dir=tmp_path)
