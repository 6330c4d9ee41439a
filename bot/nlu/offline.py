"""Offline understanding: an n-gram intent classifier trained at start-up from flows/nlu/*.yaml, the keyword
safety net for legally critical intents, and rule-based entity extraction. No network, no model files."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bot.domain import Intent
from bot.nlu import LANGUAGES, Understanding, detect_language, language_of, normalize
from bot.nlu.entities import extract_entities, warm_up
from bot.nlu.keywords import match_rule
from flows import FLOWS_DIR

logger = logging.getLogger(__name__)

NLU_DIR = FLOWS_DIR / "nlu"
# Below this winning-class probability the message is `unknown`. Chosen by 5-fold cross-validation on the
# training examples (docs/nlu.md): lower thresholds gain < 1 point there and let gibberish through.
DEFAULT_THRESHOLD = 0.2
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 5x faster to read


class TrainingDataError(ValueError):
    """A flows/nlu/*.yaml file is not a valid set of training examples."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    intent: Intent
    language: str


def load_examples(directory: Path = NLU_DIR) -> tuple[Example, ...]:
    """Every training example in `directory`/*.yaml, validated: known language, known intent names, strings."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise TrainingDataError(f"no training files in {directory}")
    return tuple(example for path in files for example in _read_examples(path))


def _read_examples(path: Path) -> list[Example]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    if not isinstance(data, dict) or data.get("language") not in LANGUAGES or not isinstance(data.get("intents"), dict):
        raise TrainingDataError(f"{path.name}: expected 'language' (es/en) and an 'intents' mapping")
    examples = []
    for name, texts in data["intents"].items():
        try:
            intent = Intent(name)
        except ValueError:
            raise TrainingDataError(f"{path.name}: unknown intent {name!r}") from None
        if not isinstance(texts, list) or not all(isinstance(text, str | int) for text in texts):
            raise TrainingDataError(f"{path.name}: {name} must be a list of texts")
        examples.extend(Example(str(text), intent, data["language"]) for text in texts)
    return examples


class _Features:
    """One fitted TfidfVectorizer reduced to what scoring one message needs: analyzer, vocabulary, idf."""

    def __init__(self, vectorizer: TfidfVectorizer) -> None:
        self.analyze: Callable[[str], list[str]] = vectorizer.build_analyzer()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.idf: np.ndarray = vectorizer.idf_
        self.size = len(self.vocabulary)

    def weights(self, normalized: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and l2-normalised sublinear tf-idf values, as TfidfVectorizer.transform computes them."""
        found = np.fromiter(
            (index for index in map(self.vocabulary.get, self.analyze(normalized)) if index is not None), dtype=np.intp
        )
        columns, counts = np.unique(found, return_counts=True)
        values = (1.0 + np.log(counts)) * self.idf[columns]
        norm = np.sqrt(values @ values)
        return columns, values / norm if norm else values


class IntentModel:
    """Character n-grams (robust to typos and missing accents) plus word n-grams, multinomial logistic regression.

    Scoring one message goes through `_Features` instead of sklearn's transform: the same arithmetic without
    sparse-matrix set-up, which is most of the cost for a single short text."""

    def __init__(self, examples: Sequence[Example]) -> None:
        texts = [normalize(example.text) for example in examples]
        labels = [example.intent.value for example in examples]
        self._vectorizers = (
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=False),
            TfidfVectorizer(
                analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=False, token_pattern=r"\S+"
            ),
        )
        matrix = hstack([vectorizer.fit_transform(texts) for vectorizer in self._vectorizers]).tocsr()
        # saga with a loose tolerance trains in a fraction of a second and scores like lbfgs run to convergence.
        self.classifier = LogisticRegression(
            C=30.0, solver="saga", tol=1e-3, max_iter=300, class_weight="balanced", random_state=0
        ).fit(matrix, labels)
        self.intents = tuple(Intent(label) for label in self.classifier.classes_)
        self._features = tuple(_Features(vectorizer) for vectorizer in self._vectorizers)
        offsets = np.cumsum([0] + [features.size for features in self._features])
        self._coef_blocks = tuple(
            np.ascontiguousarray(self.classifier.coef_[:, start:end].T) for start, end in itertools.pairwise(offsets)
        )

    def probabilities(self, normalized: str) -> np.ndarray:
        """Class probabilities (ordered as `intents`) for one normalised message."""
        scores = self.classifier.intercept_.copy()
        for features, coef in zip(self._features, self._coef_blocks, strict=True):
            columns, values = features.weights(normalized)
            if columns.size:
                scores += values @ coef[columns]
        scores -= scores.max()
        exp = np.exp(scores)
        return exp / exp.sum()

    def sklearn_probabilities(self, normalized_texts: Iterable[str]) -> np.ndarray:
        """The same probabilities through sklearn's own transform (a reference for tests; slower per message)."""
        texts = list(normalized_texts)
        matrix = hstack([vectorizer.transform(texts) for vectorizer in self._vectorizers]).tocsr()
        return self.classifier.predict_proba(matrix)

    def predict(self, normalized: str) -> tuple[Intent, float]:
        probabilities = self.probabilities(normalized)
        best = int(probabilities.argmax())
        return self.intents[best], float(probabilities[best])


@functools.cache
def load_model(directory: Path = NLU_DIR) -> IntentModel:
    """Train once per process and directory; construction of every OfflineNLU after the first is free."""
    examples = load_examples(directory)
    model = IntentModel(examples)
    logger.info("offline NLU trained on %d examples from %s", len(examples), directory)
    return model


class OfflineNLU:
    """The `Understander` that needs nothing but this repository: rules first, then the classifier."""

    def __init__(self, directory: Path = NLU_DIR, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.model = load_model(directory)
        self.threshold = threshold
        warm_up()

    def understand(
        self, text: str, *, locale: str | None, timezone: str, currency: str, now: datetime
    ) -> Understanding:
        language = language_of(locale) or detect_language(text)
        intent, confidence = self.classify(text)
        entities = extract_entities(text, language=language, timezone=timezone, currency=currency, now=now)
        return Understanding(text=text, intent=intent, confidence=confidence, entities=entities, locale=language)

    def classify(self, text: str) -> tuple[Intent, float]:
        """Intent and confidence only; a keyword rule is certain, a weak classifier guess becomes `unknown`."""
        normalized = normalize(text)
        if not normalized.replace("?", "").strip():
            return Intent.UNKNOWN, 0.0
        ruled = match_rule(normalized)
        if ruled is not None:
            return ruled, 1.0
        intent, confidence = self.model.predict(normalized)
        if confidence < self.threshold:
            return Intent.UNKNOWN, confidence
        return intent, confidence
