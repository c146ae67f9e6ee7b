# Writes random.txt: 400 random sentences in conlleval's input format ("word gold predicted", blank line between
# sentences), gold and predicted tags drawn from malformed BIO (I- after O or another type, B-B) and conlleval's rarer tags
# ([, ], ., untyped B/I, unknown prefixes). EntityMetricsTests compares EntityScoring with conlleval.pl's counts on it.
import random

random.seed(2000)
tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "[-PER", "]-LOC", ".-PER", ".", "I", "B", "X-PER"]
with open("random.txt", "w") as out:
    for _ in range(400):
        gold = [random.choice(tags) for _ in range(random.randint(0, 9))]
        predicted = [t if random.random() < 0.65 else random.choice(tags) for t in gold]
        for g, p in zip(gold, predicted):
            out.write(f"w {g} {p}\n")
        out.write("\n")
