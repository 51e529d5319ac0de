"""CLIP's byte-level BPE tokenizer, read from a local merges file (nothing downloads).

The merges file is CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (gzip or plain text): a header line,
then one merge ``"a b"`` per line, in priority order. The vocabulary is, in order: the 256 byte
symbols (printable bytes first), the same with the end-of-word marker ``</w>``, one token per merge (the first
``max_merges``), then ``<|startoftext|>`` and ``<|endoftext|>``. Text is HTML-unescaped,
whitespace-collapsed and lower-cased (CLIP also runs ``ftfy``; not needed for plain queries).
"""
from __future__ import annotations

import gzip
import html
import re
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["CLIPTokenizer"]

_WORDS = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+",
                    re.IGNORECASE)
_CLIP_MAX_MERGES = 49152 - 256 - 2


def _byte_symbols() -> dict[int, str]:
    """The printable unicode character standing for each byte (GPT-2 / CLIP byte encoding), in
    CLIP's vocabulary order: printable bytes keep their own character and come first, the other
    bytes follow as characters 256, 257, …"""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    for extra, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + extra)
    return table


class CLIPTokenizer:
    """``tokenizer(texts) → (Q, context_length) int64`` ids: start token, BPE tokens (truncated),
    end token, zero padding."""

    def __init__(self, merges_path: str | Path, context_length: int = 77, max_merges: int = _CLIP_MAX_MERGES) -> None:
        path = Path(merges_path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:max_merges + 1]
        merges = [tuple(line.split()) for line in lines if line.strip()]
        bad = next((i for i, m in enumerate(merges) if len(m) != 2), None)
        if bad is not None:
            raise ValueError(f"{path}:{bad + 2}: expected a merge 'a b', got {lines[bad]!r}")
        self.byte_symbols = _byte_symbols()
        symbols = list(self.byte_symbols.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.context_length = context_length
        self.start, self.end = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]

    def bpe(self, word: str) -> list[str]:
        """BPE symbols of one pre-tokenised word (byte symbols; the last carries ``</w>``)."""
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = [(self.ranks.get(p, len(self.ranks)), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
            rank, i = min(pairs)
            if rank == len(self.ranks):
                break
            first, second = symbols[i], symbols[i + 1]
            merged, j = [], 0
            while j < len(symbols):  # merge every occurrence of the pair, left to right
                if j < len(symbols) - 1 and symbols[j] == first and symbols[j + 1] == second:
                    merged.append(first + second)
                    j += 2
                else:
                    merged.append(symbols[j])
                    j += 1
            symbols = merged
        return symbols

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without start/end tokens."""
        text = re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip().lower()
        ids = []
        for word in _WORDS.findall(text):
            symbols = "".join(self.byte_symbols[b] for b in word.encode("utf-8"))
            ids += [self.encoder[s] for s in self.bpe(symbols)]
        return ids

    def __call__(self, texts: list[str]) -> Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start] + self.encode(text)[: self.context_length - 2] + [self.end]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
