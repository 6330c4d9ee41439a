"""Offline FAQ retrieval: TF-IDF over each document's title, tags, example questions and body, per language.

Each document gives the index short phrase rows (its title, its tags, each example question) and one row with its
whole text; its score blends its two best phrase rows with the whole text. Character n-grams (within words) absorb
typos, missing accents and inflections ("pague", "pagué", "pagar"); word n-grams reward the right words in the
right order. Below the confidence threshold, or when the best two documents are nearly tied, `answer()` returns
None so the bot offers a person instead of guessing.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from bot.domain import FaqAnswer
from bot.nlu import language_of, normalize
from knowledge.loader import Document, load_documents

# Function words that match everywhere and say nothing about the topic. Question words stay: "donde" and
# "cuando" separate "where do I pay" from "what happens if I pay late".
_SPANISH_STOP_WORDS = """
a al algo ante con de del el en entre es esta este esto eso estoy ha han hay la las le les lo los me mi mis muy nos
o para pero por puedo quiero se ser si sin sobre su sus te tengo ti tu tus un una unas unos usted ustedes y ya yo
hola buenas buenos dias tardes noches favor gracias oiga disculpe consulta pregunta 0 ?
"""
_ENGLISH_STOP_WORDS = """
a am an and any are as at be been but by can could did do does for from get got had has have hello hi i if in into
is it its me my of on or our please should so some that the their them then there these they this those to us was
we were will with would you your hey thanks thank question 0 ?
"""
_STOP_WORDS = {"es": frozenset(_SPANISH_STOP_WORDS.split()), "en": frozenset(_ENGLISH_STOP_WORDS.split())}
CHAR_NGRAMS = (3, 5)
WORD_NGRAMS = (1, 2)
CHAR_WEIGHT = 0.7  # the rest goes to word n-grams; characters absorb typos and accents, so they weigh more
PHRASE_WEIGHT = 0.4  # the rest goes to the whole document; phrases match paraphrases, the whole text topics
PHRASE_ROWS = 2  # a document's phrase score is the mean of its best PHRASE_ROWS phrase rows
UNSEEN_WEIGHT = 1.2  # words no document has weigh a bit more than the rarest known ones: off-topic stays off


@dataclass(frozen=True, slots=True)
class Threshold:
    """When an answer is confident enough to send. Calibrated on held-out phrasings (see docs/knowledge.md)."""

    min_score: float = 0.18  # below it the best document is not similar enough
    min_margin: float = 0.02  # best minus second best: below it two documents are nearly tied
    sure_score: float = 0.45  # at or above it the best document wins even when the runner-up is close


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    title: str
    path: Path
    creditor: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    text: str  # the document's answer paragraph, ready to send
    source: Source
    score: float


@dataclass(frozen=True, slots=True)
class Match:
    document: Document
    score: float


class _Space:
    """One TF-IDF feature space (character or word n-grams) fitted on the index rows."""

    def __init__(self, vectorizer: TfidfVectorizer, texts: list[str]) -> None:
        self.rows = vectorizer.fit_transform(texts).tocsr()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.idf: np.ndarray = vectorizer.idf_
        self.analyze = vectorizer.build_analyzer()
        self.unseen_idf = UNSEEN_WEIGHT * (math.log(len(texts) + 1) + 1)  # idf of a term in no row, scaled

    def similarity(self, text: str) -> np.ndarray:
        """Cosine of `text` with every row. Unlike `transform()`, n-grams no row has still count in the text's
        length, so a question made mostly of unknown words cannot score high on the few it shares."""
        query = np.zeros(len(self.idf))
        norm = 0.0
        for gram, count in Counter(self.analyze(text)).items():
            index = self.vocabulary.get(gram)
            weight = (1 + math.log(count)) * (self.unseen_idf if index is None else self.idf[index])
            norm += weight * weight
            if index is not None:
                query[index] = weight
        if norm == 0.0:
            return np.zeros(self.rows.shape[0])
        return self.rows @ (query / math.sqrt(norm))


class _Index:
    """The vectors of one (language, creditor) document set; read-only once built, so threads can share it."""

    def __init__(self, documents: list[Document], language: str) -> None:
        self.documents = tuple(documents)
        self.stop_words = _STOP_WORDS[language]
        texts: list[str] = []
        self.phrases: list[slice] = []  # per document, its phrase rows: the title, the tags, each example question
        for document in self.documents:
            tags = " ".join(document.tags)
            phrases = [document.title, tags, *document.questions]
            self.phrases.append(slice(len(texts), len(texts) + len(phrases)))
            texts += [*phrases, " ".join((document.title, tags, " ".join(document.questions), document.body))]
        self.wholes = np.asarray([phrases.stop for phrases in self.phrases], dtype=np.intp)  # one row per document
        prepared = [self.prepare(text) for text in texts]
        self.spaces: tuple[tuple[_Space, float], ...] = ()
        if prepared:
            options = {"sublinear_tf": True, "lowercase": False}  # text arrives normalized
            characters = TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, **options)
            words = TfidfVectorizer(ngram_range=WORD_NGRAMS, token_pattern=r"\S+", **options)
            self.spaces = ((_Space(characters, prepared), CHAR_WEIGHT), (_Space(words, prepared), 1 - CHAR_WEIGHT))

    def prepare(self, text: str) -> str:
        return " ".join(token for token in normalize(text).split() if token not in self.stop_words)

    def rank(self, question: str) -> list[Match]:
        """Every document, best first, scored by its two best phrase rows blended with its whole text. Two rows,
        not one: a stray shared word ("name" in "what's your name" and "an account in my name") lifts one
        example question, while a real topic match lifts several."""
        prepared = self.prepare(question)
        if not self.spaces or not prepared:
            return []
        similarity = sum(weight * space.similarity(prepared) for space, weight in self.spaces)
        phrase = np.array([np.sort(similarity[rows])[-PHRASE_ROWS:].mean() for rows in self.phrases])
        scores = PHRASE_WEIGHT * phrase + (1 - PHRASE_WEIGHT) * similarity[self.wholes]
        order = np.argsort(-scores, kind="stable")
        return [Match(self.documents[i], float(scores[i])) for i in order]


class KnowledgeBase:
    """FAQ answers from the documents under `root` (the packaged defaults when None). Indexes are built on first
    use per (language, creditor) and kept; build a new KnowledgeBase to pick up edited documents."""

    def __init__(self, root: Path | None = None, threshold: Threshold | None = None) -> None:
        self.root = root
        self.threshold = threshold or Threshold()
        self._indexes: dict[tuple[str, str | None], _Index] = {}
        self._lock = threading.Lock()

    def answer(self, question: str, locale: str, creditor: str | None = None) -> Answer | None:
        """The best document's answer, or None when no document is a confident match."""
        ranked = self.rank(question, locale, creditor)
        if not ranked or not self.is_confident(ranked):
            return None
        best = ranked[0]
        return Answer(text=best.document.answer, source=_source(best.document), score=round(best.score, 4))

    def rank(self, question: str, locale: str, creditor: str | None = None) -> list[Match]:
        """All documents of the locale's language (creditor's versions first-class), best match first."""
        return self._index(locale, creditor).rank(question)

    def is_confident(self, ranked: list[Match]) -> bool:
        """Whether `ranked` (best first) clears the threshold: a high enough score and a clear winner."""
        best = ranked[0].score
        runner_up = ranked[1].score if len(ranked) > 1 else 0.0
        limits = self.threshold
        return best >= limits.min_score and (best - runner_up >= limits.min_margin or best >= limits.sure_score)

    def documents(self, locale: str, creditor: str | None = None) -> tuple[Document, ...]:
        """The documents answers come from: the defaults with `creditor`'s replacements, sorted by id."""
        return self._index(locale, creditor).documents

    def _index(self, locale: str, creditor: str | None = None) -> _Index:
        language = language_of(locale) or "es"
        key = (language, creditor)
        with self._lock:
            if key not in self._indexes:
                documents = load_documents(self.root, creditor=creditor, locale=language)
                self._indexes[key] = _Index(documents, language)
            return self._indexes[key]


def _source(document: Document) -> Source:
    return Source(document.id, document.title, document.path, document.creditor)


def faq_answerer(kb: KnowledgeBase, creditor: str | None) -> Callable[[str, str], FaqAnswer | None]:
    """The engine's `faq(text, locale)` port for one creditor: the answer and its source, or None to offer a
    person."""

    def faq(text: str, locale: str) -> FaqAnswer | None:
        answer = kb.answer(text, locale, creditor)
        return FaqAnswer(answer.text, answer.source.title) if answer else None

    return faq
