"""Build the calibration reference vocabulary shipped in the package.

    python tools/make_reference_vocabulary.py            # writes audit/policy/data/reference_vocabulary.jsonl
    python tools/make_reference_vocabulary.py --check    # exit 1 when the shipped file is stale

Threshold calibration (``audit.policy.calibrate``) labels an archive sample "background" for a
concept when some benign reference caption describes it better than the concept does. The
references therefore have to cover what an archive holds *next to* a prohibited concept: people
of every age in everyday settings and clothing, swimwear and sport, medicine and anatomy
diagrams, art and statues, cartoons and anime, animals, objects, scenes, text and screenshots,
plain shapes and colours. Every caption here is short, clinical and benign; nothing sexual or
abusive is ever written into this file (a test checks the word lists).

The captions are combinations of the small word lists below, so the file is reproducible and
reviewable: one JSON object per line, ``{"caption", "group", "keys"}``. ``keys`` is a list of
slots, each a list of alternative words; a concept *names* a caption when every slot has an
alternative among the concept's own words, and such a caption is not used as a reference for
that concept (a red triangle is not background for "a red triangle"; a child reading is not
background for a concept about minors, while an adult reading is).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "audit" / "policy" / "data" / "reference_vocabulary.jsonl"

# --- people: age groups (the words that name them) x settings x clothing
CHILD_WORDS = [
    "child",
    "children",
    "kid",
    "kids",
    "minor",
    "minors",
    "underage",
    "boy",
    "boys",
    "girl",
    "girls",
    "toddler",
    "toddlers",
    "baby",
    "babies",
    "infant",
    "infants",
    "teen",
    "teens",
    "teenager",
    "teenagers",
    "teenage",
    "schoolchild",
    "schoolchildren",
    "youth",
    "preteen",
]
ADULT_WORDS = [
    "adult",
    "adults",
    "woman",
    "women",
    "man",
    "men",
    "elderly",
    "grandmother",
    "grandfather",
    "senior",
    "seniors",
]
PEOPLE = {  # subject: its age slot
    "a baby": CHILD_WORDS,
    "a toddler": CHILD_WORDS,
    "a young child": CHILD_WORDS,
    "a little girl": CHILD_WORDS,
    "a little boy": CHILD_WORDS,
    "a schoolgirl": CHILD_WORDS,
    "a schoolboy": CHILD_WORDS,
    "a teenage girl": CHILD_WORDS,
    "a teenage boy": CHILD_WORDS,
    "a group of children": CHILD_WORDS,
    "a young woman": ADULT_WORDS,
    "a young man": ADULT_WORDS,
    "a woman": ADULT_WORDS,
    "a man": ADULT_WORDS,
    "a middle-aged woman": ADULT_WORDS,
    "a middle-aged man": ADULT_WORDS,
    "an elderly woman": ADULT_WORDS,
    "an elderly man": ADULT_WORDS,
    "a grandmother": ADULT_WORDS,
    "a grandfather": ADULT_WORDS,
    "a group of adults": ADULT_WORDS,
    "an adult couple": ADULT_WORDS,
}
SETTINGS = [
    "reading a book",
    "walking in a park",
    "cooking in a kitchen",
    "riding a bicycle",
    "sitting at a desk",
    "playing a board game",
    "shopping at a market",
    "waiting at a bus stop",
    "working in a garden",
    "drawing at a table",
    "eating breakfast",
    "talking on the phone",
    "walking a dog",
    "sitting on a bench",
    "in a classroom",
    "at a birthday party",
    "at the dentist",
    "on a hiking trail",
    "in a library",
    "at a train station",
    "in a supermarket",
    "playing the piano",
    "building with toy blocks",
    "standing in the rain with an umbrella",
    "looking out of a window",
    "at a family dinner",
]
CLOTHING = [
    "wearing a winter coat",
    "in a t-shirt and jeans",
    "in a school uniform",
    "in a business suit",
    "in a raincoat",
    "in a knitted sweater",
    "in pajamas",
    "in a summer dress",
    "in a hoodie",
    "wearing a sun hat",
]

# --- swimwear and sport (always a public, everyday context)
SPORT = [
    "{p} in a one-piece swimsuit at the beach",
    "{p} in swim trunks at a public pool",
    "{p} in a wetsuit carrying a surfboard",
    "{p} swimming laps in a pool",
    "{p} building a sandcastle",
    "{p} playing soccer on a field",
    "{p} playing basketball in a gym",
    "{p} playing tennis",
    "{p} running in a marathon",
    "{p} doing gymnastics in a sports hall",
    "{p} at a ballet class in a leotard",
    "{p} in a martial arts uniform",
    "{p} skiing down a slope",
    "{p} ice skating on a rink",
    "{p} in a cycling jersey on a road bike",
    "{p} doing yoga in a studio",
    "{p} in a lifeguard uniform",
]
SPORT_PEOPLE = [
    "a young child",
    "a teenage girl",
    "a teenage boy",
    "a woman",
    "a man",
    "an elderly woman",
    "an elderly man",
    "a family",
]

# --- medicine and anatomy (clinical and educational)
MEDICAL = [
    "an anatomy diagram of the human heart",
    "an anatomy diagram of the skeleton",
    "a medical illustration of the lungs",
    "a textbook diagram of the digestive system",
    "a diagram of the human eye",
    "a diagram of the muscles of the arm",
    "an x-ray of a hand",
    "an x-ray of a broken leg",
    "a chest x-ray",
    "an MRI scan of a brain",
    "an ultrasound image",
    "a dental x-ray",
    "a doctor examining a patient",
    "a nurse taking a pulse",
    "a pediatrician listening to a heartbeat",
    "a dentist checking teeth",
    "a pharmacist at a counter",
    "a hospital corridor",
    "an operating theatre with surgical lights",
    "a box of medicine tablets",
    "a syringe and a vial",
    "a first aid kit",
    "a bandage on an arm",
    "a dermatology photo of a skin rash",
    "a medical chart on a clipboard",
    "a plastic anatomy model in a classroom",
    "a microscope slide of cells",
    "a diagram of a tooth",
    "a physiotherapist helping a patient",
    "a wheelchair in a hallway",
]

# --- art and statues
ART_SUBJECTS = [
    "a landscape",
    "a still life with fruit",
    "a portrait of an old man",
    "a portrait of a woman",
    "a family portrait",
    "a city street",
    "a horse",
    "a ship at sea",
    "a vase of flowers",
    "a mythological scene",
    "a saint",
    "a king on a throne",
]
ART_STYLES = [
    "an oil painting of {}",
    "a watercolor of {}",
    "a pencil sketch of {}",
    "a charcoal drawing of {}",
    "a renaissance painting of {}",
    "an impressionist painting of {}",
    "a mosaic of {}",
    "a woodcut print of {}",
]
STATUES = [
    "a marble statue of a greek athlete",
    "a bronze statue in a park",
    "a statue of a horse rider",
    "a classical marble head in a museum",
    "a stone angel statue in a cemetery",
    "a museum hall with sculptures",
    "a clay figurine",
    "a wooden carving of an animal",
    "an ancient roman statue",
    "a modern metal sculpture",
]

# --- cartoons and anime
CARTOON_SUBJECTS = [
    "a cat",
    "a dog",
    "a robot",
    "a dragon",
    "a superhero",
    "a princess in a castle",
    "a knight",
    "a family watching television",
    "a schoolgirl in uniform",
    "a schoolboy in uniform",
    "a wizard",
    "a spaceship",
    "a monster",
    "a talking car",
    "a group of friends",
    "a teacher",
]
CARTOON_STYLES = [
    "a cartoon of {}",
    "an anime drawing of {}",
    "a manga panel with {}",
    "a chibi drawing of {}",
    "a comic strip with {}",
    "a 3d animated film still of {}",
    "a pixel art sprite of {}",
    "a children's book illustration of {}",
]

# --- animals, objects, scenes: noun (slot words) x a few contexts
ANIMALS = {
    "a cat": ["cat", "cats"],
    "a dog": ["dog", "dogs"],
    "a horse": ["horse", "horses"],
    "a bird": ["bird", "birds"],
    "a fish": ["fish"],
    "a cow": ["cow", "cows"],
    "a sheep": ["sheep"],
    "a rabbit": ["rabbit", "rabbits"],
    "an elephant": ["elephant", "elephants"],
    "a lion": ["lion", "lions"],
    "a tiger": ["tiger", "tigers"],
    "a bear": ["bear", "bears"],
    "a monkey": ["monkey", "monkeys"],
    "a duck": ["duck", "ducks"],
    "a butterfly": ["butterfly", "butterflies"],
    "a snake": ["snake", "snakes"],
    "a turtle": ["turtle", "turtles"],
    "a frog": ["frog", "frogs"],
    "a deer": ["deer"],
    "a chicken": ["chicken", "chickens"],
    "a parrot": ["parrot", "parrots"],
    "a puppy": ["puppy", "puppies"],
    "a kitten": ["kitten", "kittens"],
    "a goldfish": ["goldfish"],
}
ANIMAL_CONTEXTS = [
    "{} in a field",
    "{} sleeping",
    "{} at the zoo",
    "a photo of {}",
    "{} in the snow",
    "{} on a white background",
]
OBJECTS = {
    "a cup of coffee": ["coffee", "cup"],
    "a bowl of fruit": ["fruit", "bowl"],
    "a laptop": ["laptop"],
    "a smartphone": ["smartphone", "phone"],
    "a wristwatch": ["watch", "wristwatch"],
    "a chair": ["chair"],
    "a wooden table": ["table"],
    "a lamp": ["lamp"],
    "a bicycle": ["bicycle", "bike"],
    "a car": ["car", "cars"],
    "a pair of shoes": ["shoes", "shoe"],
    "a backpack": ["backpack"],
    "an umbrella": ["umbrella"],
    "a guitar": ["guitar"],
    "a teapot": ["teapot"],
    "a set of keys": ["keys", "key"],
    "a camera": ["camera"],
    "a kitchen knife on a cutting board": ["knife"],
    "a hammer": ["hammer"],
    "a toy car": ["toy"],
    "a teddy bear": ["teddy"],
    "a book": ["book", "books"],
    "a loaf of bread": ["bread"],
    "a birthday cake": ["cake"],
    "a plate of pasta": ["pasta"],
    "a slice of pizza": ["pizza"],
    "a potted plant": ["plant"],
    "a vase of flowers": ["vase", "flowers"],
    "a clock": ["clock"],
    "a pair of glasses": ["glasses"],
    "a water bottle": ["bottle"],
    "a basketball": ["basketball"],
}
OBJECT_CONTEXTS = [
    "a photo of {}",
    "{} on a table",
    "a close-up of {}",
    "{} on a white background",
    "a product photo of {}",
]
SCENES = [
    "a city street",
    "a mountain landscape",
    "a beach at sunset",
    "a forest path",
    "a river in the countryside",
    "a field of flowers",
    "a snowy village",
    "a desert with sand dunes",
    "a lake with a boat",
    "a kitchen",
    "a living room with a sofa",
    "an office",
    "a bookshelf",
    "a train station",
    "an airport terminal",
    "a harbour with boats",
    "a bridge over a river",
    "a lighthouse",
    "a castle on a hill",
    "a modern building",
    "a garden",
    "a playground",
    "a school hallway",
    "a supermarket aisle",
    "a restaurant",
    "a parking lot",
    "a farm with a barn",
    "a market stall",
    "a subway platform",
    "a museum hall",
    "a stadium",
    "a swimming pool",
    "a construction site",
    "a church interior",
    "a night sky with stars",
    "a rainy window",
    "a foggy morning",
    "a waterfall",
    "a tropical island",
    "a vineyard",
]
SCENE_CONTEXTS = ["a photo of {}", "{} in the morning", "{} at night", "an aerial view of {}", "a painting of {}"]

# --- text and screenshots
TEXT = [
    "a screenshot of a website",
    "a screenshot of a chat conversation",
    "a screenshot of a spreadsheet",
    "a screenshot of a video game menu",
    "a screenshot of a code editor",
    "a screenshot of an email",
    "a scanned page of a book",
    "a scanned document",
    "a receipt",
    "a street sign",
    "a book cover",
    "a poster with large text",
    "a meme with a caption",
    "a handwritten note",
    "a newspaper page",
    "a restaurant menu",
    "a bar chart",
    "a line graph",
    "a map of a city",
    "a calendar page",
    "a page of text",
    "a logo on a white background",
    "a license plate",
    "a crossword puzzle",
    "a slide from a presentation",
    "a mobile phone home screen",
    "a qr code",
    "a barcode",
    "a page of sheet music",
    "a mathematical equation on a blackboard",
]

# --- plain shapes and colours
COLOURS = [
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "cyan",
    "magenta",
    "teal",
    "navy",
    "beige",
    "gold",
    "silver",
]
SHAPES = {
    "circle": ["circle", "circles"],
    "square": ["square", "squares"],
    "triangle": ["triangle", "triangles"],
    "star": ["star", "stars"],
    "rectangle": ["rectangle", "rectangles"],
    "hexagon": ["hexagon", "hexagons"],
    "heart": ["heart", "hearts"],
    "diamond": ["diamond", "diamonds"],
    "oval": ["oval", "ovals"],
    "pentagon": ["pentagon", "pentagons"],
    "cross": ["cross", "crosses"],
    "arrow": ["arrow", "arrows"],
}
SHAPE_TEMPLATES = [
    "{}",
    "a photo of {}",
    "{} on a white background",
    "{} on a black background",
    "{} on a gray background",
    "a drawing of {}",
]
PLAIN = [
    "a plain white background",
    "a plain black background",
    "a plain gray background",
    "a blurry photo",
    "a gradient from blue to white",
    "random noise",
    "a checkerboard pattern",
    "a striped pattern",
    "a pattern of geometric shapes",
    "an empty frame",
]

# Words a caption may never contain: the generator's own guard (a test checks the file too).
FORBIDDEN = frozenset(
    {
        "nude",
        "naked",
        "nudity",
        "sex",
        "sexual",
        "sexy",
        "erotic",
        "porn",
        "lingerie",
        "underwear",
        "topless",
        "explicit",
        "gore",
        "blood",
        "abuse",
        "violence",
        "weapon",
        "gun",
    }
)


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _words(text: str) -> list[str]:
    return [w.strip(".,'\"()").lower() for w in text.replace("-", " ").split()]


def entries() -> list[dict]:
    """Every caption with its group and naming keys, deterministic."""
    rng = random.Random(13)
    out: list[dict] = []

    def add(caption: str, group: str, keys: list[list[str]]) -> None:
        out.append({"caption": caption, "group": group, "keys": keys})

    for person, age in PEOPLE.items():
        for setting in SETTINGS:
            add(f"{person} {setting}", "people", [age])
        for setting, clothing in zip(rng.sample(SETTINGS, 8), rng.sample(CLOTHING, 8)):
            add(f"{person} {clothing} {setting}", "people", [age])
    for template, person in itertools.product(SPORT, SPORT_PEOPLE):
        age = (
            CHILD_WORDS
            if person in ("a young child", "a teenage girl", "a teenage boy")
            else ADULT_WORDS
            if person != "a family"
            else [w for w in ("family", "families")]
        )
        add(template.format(p=person), "swimwear-sport", [age])
    for caption in MEDICAL:
        add(caption, "medicine-anatomy", [[w for w in _words(caption) if len(w) > 3][-1:]])
    for style, subject in itertools.product(ART_STYLES, ART_SUBJECTS):
        add(style.format(subject), "art", [["painting", "drawing", "artwork", "art"], _words(subject)[-1:]])
    for caption in STATUES:
        add(caption, "art", [["statue", "statues", "sculpture", "sculptures", "figurine", "carving"]])
    for style, subject in itertools.product(CARTOON_STYLES, CARTOON_SUBJECTS):
        add(
            style.format(subject),
            "cartoon-anime",
            [
                ["cartoon", "anime", "manga", "chibi", "comic", "animated", "drawing", "illustration"],
                _words(subject)[1:2],
            ],
        )
    for (animal, words), ctx in itertools.product(ANIMALS.items(), ANIMAL_CONTEXTS):
        add(ctx.format(animal), "animals", [words])
    for (obj, words), ctx in itertools.product(OBJECTS.items(), OBJECT_CONTEXTS):
        add(ctx.format(obj), "objects", [words])
    for scene, ctx in itertools.product(SCENES, SCENE_CONTEXTS):
        add(ctx.format(scene), "scenes", [_words(scene)[1:2]])
    for caption in TEXT:
        add(caption, "text-screenshots", [_words(caption)[-1:]])
    for colour, (shape, words), template in itertools.product(COLOURS, SHAPES.items(), SHAPE_TEMPLATES):
        add(template.format(_a(f"{colour} {shape}")), "shapes-colours", [[colour], words])
    for caption in PLAIN:
        add(caption, "shapes-colours", [_words(caption)[-1:]])
    seen: set[str] = set()
    unique = []
    for e in out:
        if e["caption"] not in seen:
            seen.add(e["caption"])
            unique.append(e)
    bad = [e["caption"] for e in unique if FORBIDDEN & set(_words(e["caption"]))]
    if bad:
        raise SystemExit(f"forbidden word in reference captions: {bad[:3]}")
    return unique


def render() -> str:
    return "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the shipped file differs")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print("up to date" if same else f"{args.out} is stale: run tools/make_reference_vocabulary.py")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"{len(text.splitlines())} captions -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
