"""Question/context tokenisation for the ALBERT QA service, usable without any download.

Real SQuAD answers need ALBERT's own SentencePiece vocabulary, which ships with the
`albert-*-v2` weights (`tokenizer.json`, or `spiece.model` with the `sentencepiece` package) —
`QATokenizer.load(weights_dir)` uses it when the weights directory is given. Without it, a
small WordPiece tokenizer is trained on a bundled English text
(`models/assets/qa_corpus.txt`, a fraction of a second) and cached; its ids are NOT ALBERT's,
so with real weights it would give wrong answers — with random weights nothing is lost, and the
sequence handling (special tokens, segment ids, truncation, offsets) is the production one.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from tokenizers import (
    Encoding,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from models.errors import PayloadError

log = logging.getLogger(__name__)

CORPUS = Path(__file__).resolve().parent / "assets" / "qa_corpus.txt"
# ALBERT's special tokens, in ALBERT's id order (pad 0, unk 1, [CLS] 2, [SEP] 3, [MASK] 4).
SPECIAL_TOKENS = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
FALLBACK_VOCAB = 4000  # upper bound; the small corpus yields fewer pieces. ALBERT's is 30000.
FALLBACK_SOURCE = "fallback-wordpiece"


@dataclass(frozen=True)
class QAEncoding:
    """One question+context pair as model inputs, plus what is needed to map a span back."""

    input_ids: list[int]
    token_type_ids: list[int]
    attention_mask: list[int]
    # Character span in the context for each token, None for question/special/padding tokens.
    context_offsets: list[tuple[int, int] | None]
    truncated: bool


class QATokenizer:
    """`[CLS] question [SEP] context [SEP]` encoding padded to `max_len`, context truncated."""

    def __init__(self, tokenizer: Tokenizer, max_len: int, source: str):
        self.source = source
        self.max_len = max_len
        self._tok = tokenizer
        self._tok.enable_truncation(max_len, strategy="only_second")
        pad_id = tokenizer.token_to_id("<pad>")
        self._tok.enable_padding(length=max_len, pad_id=0 if pad_id is None else pad_id, pad_token="<pad>")

    @classmethod
    def load(cls, max_len: int, weights_dir: Path | None = None) -> "QATokenizer":
        """ALBERT's own tokenizer from `weights_dir`, else the cached offline fallback."""
        if weights_dir is not None:
            return cls(_albert_tokenizer(weights_dir), max_len, source=str(weights_dir))
        return cls(fallback_tokenizer(), max_len, source=FALLBACK_SOURCE)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, question: str, context: str) -> QAEncoding:
        try:
            enc: Encoding = self._tok.encode(question, context)
        except Exception as exc:  # the tokenizers library raises a bare Exception on truncation failure
            raise PayloadError(
                f"question too long: it must leave room for the context within {self.max_len} tokens ({exc})"
            ) from None
        sequence_ids = enc.sequence_ids
        offsets = [o if s == 1 else None for o, s in zip(enc.offsets, sequence_ids)]
        return QAEncoding(
            input_ids=list(enc.ids),
            token_type_ids=list(enc.type_ids),
            attention_mask=list(enc.attention_mask),
            context_offsets=offsets,
            truncated=bool(enc.overflowing),
        )


def _albert_tokenizer(weights_dir: Path) -> Tokenizer:
    """The real tokenizer from an HF directory: `tokenizer.json`, else converted from `spiece.model`."""
    path = Path(weights_dir) / "tokenizer.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(weights_dir), local_files_only=True).backend_tokenizer
    except Exception as exc:
        raise FileNotFoundError(
            f"{weights_dir}: no usable ALBERT tokenizer (need tokenizer.json, or spiece.model with "
            f"the 'sentencepiece' package installed): {exc}"
        ) from exc


def _train_fallback() -> Tokenizer:
    """A lower-cased WordPiece trained on the bundled corpus, with every printable ASCII character
    in its alphabet so unseen words split into pieces instead of becoming <unk>."""
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=FALLBACK_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=[chr(c) for c in range(33, 127)],
        show_progress=False,
    )
    tok.train([str(CORPUS)], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return tok


def fallback_tokenizer() -> Tokenizer:
    """The offline fallback, trained at first use and cached by corpus content."""
    from models.build import cache_dir

    digest = hashlib.sha256(CORPUS.read_bytes() + str(FALLBACK_VOCAB).encode()).hexdigest()[:12]
    path = cache_dir() / f"qa-tokenizer-{digest}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    tok = _train_fallback()
    tmp = path.with_suffix(f".{id(tok)}.tmp")
    tok.save(str(tmp))
    tmp.replace(path)  # atomic: concurrent replicas never read a half-written file
    log.info("trained offline QA tokenizer (%d pieces) → %s", tok.get_vocab_size(), path)
    return tok
