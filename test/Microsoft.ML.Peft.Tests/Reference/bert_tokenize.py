#!/usr/bin/env python3
"""BERT's reference tokenization (basic tokenization + WordPiece), standard library only.

An independent statement of the rules of BERT's tokenization.py (BasicTokenizer + WordpieceTokenizer),
used by BertTokenizationTests to check the C# tokenizer.

    python3 bert_tokenize.py VOCAB [--cased] < texts.jsonl > ids.txt

VOCAB is a WordPiece vocabulary (one token a line, the id is the line number). Each input line is one
text as a JSON string; each output line is its ids (no [CLS]/[SEP]), separated by spaces.
Without --cased the text is lowercased and accents are stripped (do_lower_case=True).
"""

import json
import sys
import unicodedata

MAX_INPUT_CHARS_PER_WORD = 100
UNKNOWN = "[UNK]"

# Codepoint ranges of the CJK Unified Ideographs blocks that BERT surrounds with spaces.
CJK_RANGES = [
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
]


def is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(ch):
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def clean(text):
    out = []
    for ch in text:
        if ord(ch) in (0, 0xFFFD) or is_control(ch):
            continue
        out.append(" " if is_whitespace(ch) else ch)
    return "".join(out)


def strip_accents(word):
    return "".join(ch for ch in unicodedata.normalize("NFD", word) if unicodedata.category(ch) != "Mn")


def split_punctuation(word):
    pieces, current = [], []
    for ch in word:
        if is_punctuation(ch):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(ch)
        else:
            current.append(ch)
    if current:
        pieces.append("".join(current))
    return pieces


def basic_tokenize(text, lower_case):
    text = clean(text)
    text = "".join(" " + ch + " " if is_cjk(ch) else ch for ch in text)
    words = []
    for word in text.split():
        if lower_case:
            word = strip_accents(word.lower())
        words.extend(split_punctuation(word))
    # Joined and split again, as the reference does (drops pieces that became empty).
    return " ".join(words).split()


def wordpiece(word, vocab):
    if len(word) > MAX_INPUT_CHARS_PER_WORD:
        return [vocab[UNKNOWN]]
    ids, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found is None:
            return [vocab[UNKNOWN]]
        ids.append(found)
        start = end
    return ids


def read_vocab(path):
    vocab = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip("\n")] = index
    return vocab


def main():
    args = sys.argv[1:]
    lower_case = "--cased" not in args
    paths = [a for a in args if a != "--cased"]
    if len(paths) != 1:
        sys.exit(__doc__)
    vocab = read_vocab(paths[0])
    stdin = open(sys.stdin.fileno(), encoding="utf-8", closefd=False)
    stdout = open(sys.stdout.fileno(), "w", encoding="utf-8", newline="\n", closefd=False)
    for line in stdin:
        if not line.strip():
            continue
        ids = [i for w in basic_tokenize(json.loads(line), lower_case) for i in wordpiece(w, vocab)]
        stdout.write(" ".join(str(i) for i in ids) + "\n")
    stdout.flush()


if __name__ == "__main__":
    main()
