"""Sentences for the text-model tests: lengths from one word to 30-odd tokens, and on the
bundled `sentiment` some leave at each of its four exits."""

SENTENCES = [
    "A gorgeous, witty, seductive movie.",
    "Dull.",
    "The plot is a mess, the acting wooden, and the two hours feel like a week in a dentist's "
    "waiting room with nothing but old magazines for company.",
    "Not bad at all, though the ending drags on a little too long for its own good.",
    "Brilliant!",
    # snippets from the Rotten Tomatoes corpus that leave at exits 1, 2 and 3
    "A three-hour cinema master class.",
    "More impressionistic than analytical, A Grin Without a Cat is a grand immersion.",
    "Another in-your-face wallow in the lower depths made by people who have never sung those "
    "blues.",
    "Alarms for Duvall's throbbing sincerity and his elderly propensity for patting people "
    "while he talks.",
    "An utterly forgettable sequel that nobody asked for.",
]
