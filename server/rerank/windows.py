"""A long document's windows (--long-document-strategy chunk): where each window of tokens starts
and ends, and each document's score as its best window's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.core.rerank_job import Passage


@dataclass(frozen=True)
class Window:
    """One window of a chunked document: its token span in the document's tokens and its
    character span in the document's text (`text[start:end]` is the window's text)."""

    first_token: int
    end_token: int
    start: int
    end: int


def window_spans(
    offsets: Sequence[tuple[int, int]], length: int, overlap: int, max_windows: int
) -> list[tuple[int, int]]:
    """Token spans [first, end) of `length` tokens, each overlapping the one before by `overlap`
    tokens, from the first token until the last one is covered or `max_windows` are made.

    A window boundary never splits a character that byte-level BPE spread over several tokens
    (an emoji, most CJK characters): such a boundary moves back to where the character begins,
    so every window is whole text and `text[start:end]` is exactly its tokens' text.
    """
    n = len(offsets)

    def starts_a_character(i: int) -> bool:
        return i == 0 or i >= n or offsets[i][0] >= offsets[i - 1][1]

    spans: list[tuple[int, int]] = []
    first = 0
    while True:
        end = min(first + length, n)
        while end > first + 1 and not starts_a_character(end):
            end -= 1
        spans.append((first, end))
        if end >= n or len(spans) == max_windows:
            return spans
        following = max(end - overlap, first + 1)
        while following > first + 1 and not starts_a_character(following):
            following -= 1
        first = following


def best_windows(scores: list[float], windows: list[list[Window]] | None) -> tuple[list[float], list[Passage | None]]:
    """Each document's score (the highest of its windows') and, for a document of several
    windows, where the best one lies (the first of equal ones)."""
    if windows is None:
        return scores, [None] * len(scores)
    doc_scores: list[float] = []
    passages: list[Passage | None] = []
    first = 0
    for doc_windows in windows:
        window_scores = scores[first : first + len(doc_windows)]
        best = max(range(len(doc_windows)), key=window_scores.__getitem__)
        doc_scores.append(window_scores[best])
        window = doc_windows[best]
        passage = Passage(window.start, window.end, best, len(doc_windows))
        passages.append(passage if len(doc_windows) > 1 else None)
        first += len(doc_windows)
    return doc_scores, passages
