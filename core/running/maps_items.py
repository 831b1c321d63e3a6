"""The Hidden-state maps page's input: items (a word in a sentence, in a group) parsed from text, and the presets.

One item per line, "group: sentence", the word between [square brackets] (or a default word found
as a whole word); core.running.maps turns the items into maps and separation scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

MAX_ITEMS = 24  # each item is one forward pass per model; the trace cache holds 64
MARKED = re.compile(r"\[([^\[\]]*)\]")  # the word to map, written between square brackets


def _lines(group: str, sentences: Sequence[str]) -> list[str]:
    return [f"{group}: {sentence}" for sentence in sentences]


# Presets, one item per line. Every "apple" is written in lower case and never opens a sentence, so
# it is the same token everywhere: at layer 0 all points coincide, and only the context can move them.
APPLE = "\n".join(_lines("fruit", [
    "I ate an [apple] for breakfast",
    "She baked an [apple] pie for dessert",
    "He picked a ripe [apple] from the tree",
    "The juice is made from [apple] and pear",
    "A green [apple] is more sour than a red one",
    "She cut the [apple] into thin slices",
]) + _lines("company", [
    "The company that makes iPads and AirPods is called [apple]",
    "I bought shares of [apple], the company behind the iPhone",
    "The new phone from [apple] costs a thousand dollars",
    "Investors expect [apple] to report record profits",
    "He works as an engineer at [apple] in California",
    "The CEO of [apple] announced a new laptop",
]))
CITY_TEMPLATE = "Last year I spent a week in [{}] with my family"
CITIES = {  # one sentence each, the same sentence around every city: only the city differs
    "Europe": ["Paris", "Berlin", "Madrid", "Rome", "Vienna"],
    "Asia": ["Tokyo", "Beijing", "Delhi", "Seoul", "Bangkok"],
    "Africa": ["Cairo", "Nairobi", "Lagos", "Accra", "Dakar"],
    "Americas": ["Chicago", "Toronto", "Lima", "Havana", "Bogota"],
}
CITY = "\n".join(line for continent, cities in CITIES.items()
                 for line in _lines(continent, [CITY_TEMPLATE.format(city) for city in cities]))
BANK = "\n".join(_lines("river", [
    "We had a picnic on the [bank] of the river",
    "The boat drifted towards the muddy [bank]",
    "Fishermen sat along the [bank] all morning",
    "Reeds grow thick on the far [bank] of the stream",
    "The flood washed away part of the [bank]",
]) + _lines("money", [
    "She deposited her salary at the [bank]",
    "The [bank] raised its interest rates again",
    "He asked the [bank] for a loan to buy a house",
    "I need to withdraw cash from the [bank] today",
    "The [bank] closed my account without warning",
]))
PRESETS = {"apple: 6 fruit, 6 company": APPLE, "20 cities by continent": CITY, "bank: 5 river, 5 money": BANK}


@dataclass(frozen=True)
class MapItem:
    """One point of the map: the word at characters [start, end) of `sentence`, in `group`."""

    group: str
    sentence: str  # as run through the model (square brackets removed)
    word: str
    start: int
    end: int


def parse_items(text: str, default_word: str = "") -> list[MapItem]:
    """Read one item per line: `group: sentence`.

    The word to map is the one written between square brackets ("Europe: I flew to
    [Paris] in May"); a line without brackets uses `default_word`, found as a whole
    word (first occurrence). Blank lines are skipped. Mistakes raise ValueError
    naming the line.
    """
    items = []
    lines = [line.strip() for line in text.splitlines()]
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        group, colon, sentence = line.partition(":")
        group, sentence = group.strip(), sentence.strip()
        if not colon or not group or not sentence:
            raise ValueError(f'Line {number} "{line}" has no group: write it as "group: sentence".')
        marks = list(MARKED.finditer(sentence))
        if len(marks) > 1:
            raise ValueError(f'Line {number} "{line}" marks {len(marks)} words: put [brackets] around one word.')
        if marks:
            mark = marks[0]
            word = mark.group(1).strip()
            if not word:
                raise ValueError(f'Line {number} "{line}" has empty brackets: put the word inside them.')
            plain = sentence[: mark.start()] + mark.group(1) + sentence[mark.end():]
            start = mark.start() + mark.group(1).index(word)
            items.append(MapItem(group, plain, word, start, start + len(word)))
            continue
        if not default_word.strip():
            raise ValueError(f'Line {number} "{line}" marks no word: put [brackets] around the word to map, '
                             "or type the word to map.")
        word = default_word.strip()
        # the same whole-word rule as the similarity page (find_word), on the sentence text alone
        left = r"\b" if re.match(r"\w", word[0]) else ""
        right = r"\b" if re.match(r"\w", word[-1]) else ""
        found = re.search(left + re.escape(word) + right, sentence, flags=re.IGNORECASE)
        if found is None:
            raise ValueError(f'The word "{word}" does not appear in sentence {len(items) + 1} "{sentence}" '
                             f"(line {number}).")
        items.append(MapItem(group, sentence, found.group(0), *found.span()))
    check_items(items)
    return items


def check_items(items: Sequence[MapItem]) -> None:
    """Raise ValueError unless there are 2+ groups, each with 2+ sentences, and at most MAX_ITEMS in all."""
    if not items:
        raise ValueError("Type at least two groups of sentences, one per line as \"group: sentence\".")
    if len(items) > MAX_ITEMS:
        raise ValueError(f"Give at most {MAX_ITEMS} sentences (got {len(items)}): each one runs through both models.")
    sizes = pd.Series([item.group for item in items]).value_counts(sort=False)
    if len(sizes) < 2:
        raise ValueError(f'All sentences are in one group ("{sizes.index[0]}"): give at least two groups, '
                         "so there is something to separate.")
    alone = [group for group, size in sizes.items() if size < 2]
    if alone:
        raise ValueError("Each group needs at least two sentences; " + ", ".join(f'"{g}"' for g in alone)
                         + (" has" if len(alone) == 1 else " have") + " only one.")
