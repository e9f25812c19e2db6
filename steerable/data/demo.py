"""Built-in demo data: everyday questions whose answers vary in verbosity and positivity, labelled 0..4.

Written for this project so a run works with no download. Answers are assembled from per-topic advice
sentences, so both labels are true of the text by construction:

* verbosity v: the answer is the topic's first `SENTENCES[v]` advice sentences (1, 2, 3, 5, 7), always in
  the same order, so what varies with the labels is length and tone and not which advice is given (a small
  model learns the labels' effect within a few minutes instead of spending its steps on the content);
* positivity p: every sentence carries one evaluative adjective from `ADJECTIVES[p]` (from gloomy to
  enthusiastic), and the extremes add an opener ("Sadly, ..." / "Happily, ...") and, for p=4, an exclamation.

A scorer that counts sentences, or positive minus negative words of `POSITIVE_WORDS`/`NEGATIVE_WORDS` per
sentence, orders the answers exactly as the labels do. The advice sentences themselves use no word of
either list.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from steerable.data.records import Conversation, PromptRecord, Turn

# ------------------------------------------------------------------------------------------------ tables

SENTENCES = (1, 2, 3, 5, 7)  # sentences per answer, by verbosity level

# One evaluative adjective per sentence, by positivity level; all start with a consonant sound ("a {adj}").
ADJECTIVES: dict[int, tuple[str, ...]] = {
    0: ("miserable", "grim", "dreary", "thankless", "joyless"),
    1: ("tedious", "tiresome", "dull", "boring", "bothersome"),
    2: ("common", "standard", "typical", "conventional", "normal"),
    3: ("good", "helpful", "useful", "sensible", "handy"),
    4: ("wonderful", "brilliant", "fantastic", "splendid", "marvellous"),
}

# Sentence openers for the two extremes, put in front of the first sentence.
OPENERS: dict[int, tuple[str, ...]] = {
    0: ("Sadly", "Unfortunately", "Regrettably"),
    4: ("Happily", "Luckily", "Fortunately"),
}

NEGATIVE_WORDS = frozenset(
    w.lower() for level in (0, 1) for w in (*ADJECTIVES[level], *OPENERS.get(level, ()))
)
POSITIVE_WORDS = frozenset(
    w.lower() for level in (3, 4) for w in (*ADJECTIVES[level], *OPENERS.get(level, ()))
)


@dataclass(frozen=True)
class Topic:
    name: str
    activity: str  # fits the question templates: "Do you have any tips for {activity}?"
    facts: tuple[str, ...]  # advice sentences, each with one "a {adj}" slot and no other full stop


TOPICS: tuple[Topic, ...] = (
    Topic(
        "cooking",
        "cooking simple meals at home",
        (
            "Reading the whole recipe before you start is a {adj} habit.",
            "Soaking dried beans overnight is a {adj} way to cut the cooking time.",
            "A sharp knife is a {adj} tool, since it slips less than a blunt one.",
            "Tasting the sauce as it simmers is a {adj} way to judge the salt.",
            "Cooking a large pot of soup on Sunday is a {adj} plan for busy weeks.",
            "Letting meat rest for a few minutes after cooking is a {adj} step.",
            "Keeping a jar of stock in the freezer is a {adj} trick for quick dinners.",
            "Chopping all the vegetables before you turn on the stove is a {adj} routine.",
        ),
    ),
    Topic(
        "travel",
        "planning a weekend trip",
        (
            "Booking trains a few weeks ahead is a {adj} way to pay lower fares.",
            "Packing a single small bag is a {adj} choice for a short trip.",
            "Checking the opening hours of museums is a {adj} step before you go.",
            "Saving offline maps on your phone is a {adj} trick for places with poor signal.",
            "Keeping copies of your tickets in two places is a {adj} habit.",
            "Leaving one afternoon unplanned is a {adj} idea on most trips.",
            "Staying near a station is a {adj} way to save time each day.",
            "Carrying a refillable bottle is a {adj} habit when you travel.",
        ),
    ),
    Topic(
        "sleep",
        "sleeping through the night",
        (
            "Going to bed at the same time each night is a {adj} habit.",
            "Keeping the bedroom cool and dark is a {adj} way to rest deeply.",
            "Avoiding coffee after lunch is a {adj} rule for most people.",
            "Putting your phone in another room is a {adj} step before bed.",
            "A short wind-down routine is a {adj} signal that the day is over.",
            "Getting some daylight in the morning is a {adj} way to set your body clock.",
            "Writing tomorrow's tasks on paper is a {adj} trick for a busy mind.",
            "Keeping naps under half an hour is a {adj} choice if your nights are short.",
        ),
    ),
    Topic(
        "exercise",
        "exercising regularly",
        (
            "A brisk walk on most days is a {adj} place to begin.",
            "Warming up for five minutes is a {adj} way to prepare your muscles.",
            "Training with a friend is a {adj} way to stay on schedule.",
            "Adding a little weight each week is a {adj} rule for strength training.",
            "Resting one or two days a week is a {adj} part of any plan.",
            "Stretching after a workout is a {adj} habit for stiff legs.",
            "Writing down each session is a {adj} way to track your progress.",
            "Taking the stairs instead of the lift is a {adj} trick for busy days.",
        ),
    ),
    Topic(
        "study",
        "studying for exams",
        (
            "Testing yourself with flash cards is a {adj} way to check what you remember.",
            "Spreading revision over several weeks is a {adj} plan.",
            "Studying in blocks of about forty minutes is a {adj} routine.",
            "Explaining a topic aloud is a {adj} test of whether you understand it.",
            "Working through past papers is a {adj} way to learn the question style.",
            "Clearing your desk is a {adj} habit before a study session.",
            "Sleeping enough the night before an exam is a {adj} choice.",
            "Turning off notifications is a {adj} step for longer focus.",
        ),
    ),
    Topic(
        "pets",
        "looking after a new dog",
        (
            "Feeding your dog at fixed times is a {adj} routine.",
            "Short training sessions each day are a {adj} way to teach commands.",
            "Taking the dog out right after meals is a {adj} habit during house training.",
            "A visit to the vet in the first week is a {adj} step.",
            "Letting the dog sniff around on walks is a {adj} way to tire it out.",
            "A crate with a soft blanket is a {adj} place for a new dog to rest.",
            "Rewarding calm behaviour is a {adj} rule for the whole family.",
            "Checking the garden fence for gaps is a {adj} task before the dog arrives.",
        ),
    ),
    Topic(
        "money",
        "saving money each month",
        (
            "Moving money to savings on payday is a {adj} habit.",
            "Tracking every purchase for a month is a {adj} way to see where the money goes.",
            "Cooking at home more often is a {adj} way to spend less.",
            "Cancelling unused subscriptions is a {adj} first step.",
            "Waiting a day before any large purchase is a {adj} rule.",
            "Keeping a small emergency fund is a {adj} plan for surprise bills.",
            "Comparing prices per kilogram is a {adj} trick at the shop.",
            "Setting a weekly spending limit is a {adj} routine.",
        ),
    ),
    Topic(
        "gardening",
        "growing vegetables on a balcony",
        (
            "Large pots with drainage holes are a {adj} choice for tomatoes.",
            "Watering early in the morning is a {adj} habit in summer.",
            "Herbs such as mint and basil are a {adj} crop for beginners.",
            "Mixing compost into the soil is a {adj} way to feed your plants.",
            "Picking lettuce leaves from the outside is a {adj} trick for a longer harvest.",
            "Checking the leaves for pests each week is a {adj} routine.",
            "Sowing a few seeds every two weeks is a {adj} plan for a steady supply.",
            "Moving the pots into the sun is a {adj} step if growth is slow.",
        ),
    ),
    Topic(
        "weather",
        "dressing for cold weather",
        (
            "Wearing several thin layers is a {adj} way to stay warm.",
            "A wool hat and gloves are a {adj} choice on windy days.",
            "Waterproof boots are a {adj} purchase for wet pavements.",
            "Checking the forecast before you leave is a {adj} habit.",
            "A scarf over the mouth is a {adj} trick in freezing wind.",
            "Keeping a spare pair of socks in your bag is a {adj} idea.",
            "A warm drink before a long walk is a {adj} way to start.",
            "Wool or fleece next to the skin is a {adj} option, since cotton stays damp.",
        ),
    ),
    Topic(
        "music",
        "learning to play the guitar",
        (
            "Practising for fifteen minutes every day is a {adj} routine.",
            "Learning a few simple chords first is a {adj} plan.",
            "Tuning the guitar before each session is a {adj} habit.",
            "Playing along with slow songs is a {adj} way to practise chord changes.",
            "A metronome is a {adj} tool for steady timing.",
            "Recording yourself is a {adj} way to hear your progress.",
            "Short breaks are a {adj} idea when your fingertips get sore.",
            "Lowering the strings slightly is a {adj} fix for a stiff guitar.",
        ),
    ),
    Topic(
        "reading",
        "reading more books",
        (
            "Carrying a book everywhere is a {adj} way to use spare minutes.",
            "Reading ten pages before bed is a {adj} routine.",
            "Joining a book club is a {adj} way to find new titles.",
            "Borrowing from the library is a {adj} choice on a budget.",
            "Putting aside a book that does not hold you is a {adj} rule.",
            "Audiobooks are a {adj} option for long commutes.",
            "Keeping a list of books to read next is a {adj} habit.",
            "Setting a small monthly goal is a {adj} plan.",
        ),
    ),
    Topic(
        "cleaning",
        "keeping a small flat tidy",
        (
            "Spending ten minutes tidying each evening is a {adj} routine.",
            "Washing the dishes right after meals is a {adj} habit.",
            "Giving every item a fixed place is a {adj} rule.",
            "Clearing one shelf at a time is a {adj} way to declutter.",
            "A basket by the door is a {adj} spot for keys and post.",
            "Cleaning from top to bottom is a {adj} order, since dust falls down.",
            "Opening the windows while you clean is a {adj} idea.",
            "Donating clothes you have not worn in a year is a {adj} step.",
        ),
    ),
    Topic(
        "commuting",
        "cycling to work",
        (
            "A bright front light is a {adj} purchase for dark mornings.",
            "Planning a route along quiet streets is a {adj} first step.",
            "Checking the tyre pressure each week is a {adj} habit.",
            "A rain jacket in your bag is a {adj} backup.",
            "Riding the route on a weekend first is a {adj} way to learn it.",
            "Leaving a change of clothes at work is a {adj} trick.",
            "A solid lock is a {adj} investment in a city.",
            "Keeping a steady pace is a {adj} way to avoid arriving sweaty.",
        ),
    ),
    Topic(
        "hydration",
        "drinking enough water",
        (
            "Keeping a bottle on your desk is a {adj} reminder to drink.",
            "A glass of water with each meal is a {adj} habit.",
            "Adding a slice of lemon is a {adj} trick if plain water tastes flat.",
            "Drinking more on hot days is a {adj} rule.",
            "Herbal tea is a {adj} way to drink more in winter.",
            "Fruit such as melon is a {adj} source of water too.",
            "Setting hourly reminders is a {adj} idea on busy days.",
            "A glass of water after exercise is a {adj} routine.",
        ),
    ),
    Topic(
        "photography",
        "taking photos with a phone",
        (
            "Wiping the lens before each shot is a {adj} habit.",
            "Shooting near a window is a {adj} way to get soft light.",
            "Tapping the screen to set the focus is a {adj} trick.",
            "Holding the phone with both hands is a {adj} way to avoid blur.",
            "Turning on the grid lines is a {adj} aid for straight horizons.",
            "Taking several shots of the same scene is a {adj} routine.",
            "Stepping closer instead of zooming is a {adj} rule.",
            "Shooting in the hour before sunset is a {adj} choice for warm colours.",
        ),
    ),
    Topic(
        "houseplants",
        "keeping houseplants alive",
        (
            "Checking the soil with a finger before watering is a {adj} habit.",
            "Pots with drainage holes are a {adj} choice for most plants.",
            "Turning the pot every week is a {adj} way to keep growth even.",
            "Wiping dust off the leaves is a {adj} task once a month.",
            "A spot near a bright window is a {adj} home for most plants.",
            "Watering less in winter is a {adj} rule.",
            "Repotting in spring is a {adj} step when roots fill the pot.",
            "Snake plants are a {adj} pick for beginners.",
        ),
    ),
)

# Question templates; the held-out ones only ever appear in `demo_prompts`.
TRAIN_TEMPLATES = (
    "Do you have any tips for {activity}?",
    "What should a beginner know about {activity}?",
    "How do I get started with {activity}?",
    "Can you give me some advice on {activity}?",
    "I keep struggling with {activity}. What can I do?",
    "Give me a few pointers on {activity}.",
    "Which habits help with {activity}?",
    "My friend asked me about {activity}. What should I tell them?",
    "What is one thing that makes {activity} easier?",
    "Any advice for someone who is new to {activity}?",
    "How can I make {activity} part of my week?",
    "What do people often get wrong about {activity}?",
    "Could you share a practical tip about {activity}?",
    "I want to improve at {activity}. Where should I begin?",
    "Tell me something worth knowing about {activity}.",
    "What works for {activity} when time is short?",
    "Please suggest an easy first step for {activity}.",
    "How would you approach {activity}?",
    "What advice would you give a friend about {activity}?",
    "Is there a simple trick for {activity}?",
)
HELDOUT_TEMPLATES = (
    "What is your top suggestion for {activity}?",
    "Explain how to get into {activity}.",
    "I want to focus on {activity} this month. Any ideas?",
    "Share some advice about {activity} for a busy person.",
    "What should I keep in mind when {activity}?",
    "How can I make progress with {activity}?",
)

# -------------------------------------------------------------------------------------------- generators


def demo_conversations(n: int = 300, seed: int = 0) -> list[Conversation]:
    """`n` single-turn conversations, every (verbosity, positivity) pair equally often in each run of 25.

    Prompts cycle through all training (template, topic) pairs in a seeded order before repeating.
    """
    rng = random.Random(seed)
    questions = _questions(TRAIN_TEMPLATES, rng)
    levels = [(v, p) for v in range(len(SENTENCES)) for p in sorted(ADJECTIVES)]
    rng.shuffle(levels)
    conversations = []
    for i in range(n):
        topic, question = questions[i % len(questions)]
        verbosity, positivity = levels[i % len(levels)]
        answer = Turn(
            "assistant",
            _answer(topic, verbosity, positivity, rng),
            {"verbosity": float(verbosity), "positivity": float(positivity)},
        )
        conversations.append(
            Conversation([Turn("user", question), answer], id=f"demo-{i:04d}", source="demo")
        )
    return conversations


def demo_prompts(n: int = 20, seed: int = 0) -> list[PromptRecord]:
    """`n` held-out prompts in the same style; their templates never occur in `demo_conversations`."""
    questions = _questions(HELDOUT_TEMPLATES, random.Random(seed))
    if n > len(questions):
        raise ValueError(f"the demo has {len(questions)} held-out prompts, asked for {n}")
    return [
        PromptRecord(
            messages=[{"role": "user", "content": q}], id=f"demo-prompt-{i:03d}", category=topic.name
        )
        for i, (topic, q) in enumerate(questions[:n])
    ]


def _questions(templates: tuple[str, ...], rng: random.Random) -> list[tuple[Topic, str]]:
    pairs = [(topic, t.format(activity=topic.activity)) for t in templates for topic in TOPICS]
    rng.shuffle(pairs)
    return pairs


def _answer(topic: Topic, verbosity: int, positivity: int, rng: random.Random) -> str:
    facts = topic.facts[: SENTENCES[verbosity]]
    sentences = [fact.format(adj=rng.choice(ADJECTIVES[positivity])) for fact in facts]
    if positivity in OPENERS:
        first = sentences[0]
        sentences[0] = f"{rng.choice(OPENERS[positivity])}, {first[0].lower()}{first[1:]}"
    if positivity == max(ADJECTIVES):
        sentences[-1] = sentences[-1].removesuffix(".") + "!"
    return " ".join(sentences)
