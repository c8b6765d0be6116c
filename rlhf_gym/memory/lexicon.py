"""Fact slots for the DialogueMemory env: value lexicons and plant / update / probe templates.

Everything here was written for this project (no copied text). Each slot has dozens of values and
several phrasings for every act, and the planted sentence is spliced before or after a real human
turn, so an agent cannot score by memorising a template: it has to find the value in the
conversation it is in.

Templates use ``{v}`` (the value), ``{old}`` (the value an update replaces), ``{a}`` (the article
"a"/"an" for the value) and slot-specific fields (``{kind}`` of pet, ``{rel}`` relative, ``{event}``,
``{cat}`` of favourite thing), drawn once per fact.
"""

from __future__ import annotations

FIRST_NAMES = (
    "Priya", "Tomasz", "Ingrid", "Kwame", "Rosalind", "Mateo", "Yuki", "Leopold", "Amara", "Sven", "Noor",
    "Desmond", "Ximena", "Oskar", "Thandiwe", "Rafferty", "Ottilie", "Emeka", "Fenella", "Joaquin", "Saoirse",
    "Bartholomew", "Linnea", "Dashiell", "Anouk", "Cormac", "Zofia", "Ignatius", "Marisol", "Hamish", "Ayesha",
    "Lachlan", "Giselle", "Tobias", "Esperanza", "Florian", "Imogen", "Kenji", "Philippa", "Rupert", "Soraya",
    "Casimir", "Delphine", "Everett", "Henrietta", "Idris", "Juniper", "Magnus", "Odalys", "Percival",
)
PET_NAMES = (
    "Biscuit", "Pepperoni", "Waffles", "Noodle", "Pickles", "Mochi", "Churro", "Gizmo", "Marmalade", "Pretzel",
    "Tofu", "Sprocket", "Dumpling", "Bramble", "Zucchini", "Nugget", "Clementine", "Wasabi", "Muffin", "Pistachio",
    "Rascal", "Crouton", "Jellybean", "Turnip", "Snickerdoodle", "Paprika", "Fudge", "Bagel", "Dorito", "Meatball",
    "Sushi", "Cinnamon", "Gumbo", "Kiwi", "Tater", "Scooter", "Nacho", "Pudding", "Radish", "Wonton",
)
PET_KINDS = ("dog", "cat", "rabbit", "parrot", "hamster", "tortoise", "goldfish", "ferret", "guinea pig", "cockatiel")
CITIES = (
    "Lisbon", "Winnipeg", "Tallinn", "Asheville", "Valparaiso", "Ljubljana", "Tucson", "Marrakech", "Halifax",
    "Bergen", "Cork", "Kyoto", "Boise", "Porto", "Adelaide", "Krakow", "Savannah", "Bratislava", "Duluth",
    "Leipzig", "Oaxaca", "Spokane", "Dunedin", "Bologna", "Chattanooga", "Tampere", "Galway", "Hobart",
    "Pittsburgh", "Seville", "Anchorage", "Trieste", "Cusco", "Reykjavik", "Eugene", "Nantes", "Fresno",
    "Gdansk", "Tromso", "Bilbao",
)
JOBS = (
    "beekeeper", "welder", "pharmacist", "cartographer", "dental hygienist", "locksmith", "zookeeper",
    "court stenographer", "paramedic", "sommelier", "glassblower", "actuary", "florist", "crane operator",
    "librarian", "veterinarian", "tattoo artist", "meteorologist", "physiotherapist", "blacksmith",
    "air traffic controller", "pastry chef", "translator", "park ranger", "electrician", "optometrist",
    "archivist", "surveyor", "puppeteer", "radiographer", "carpenter", "midwife", "stonemason", "sound engineer",
    "ophthalmologist", "landscaper", "piano tuner", "dietitian", "lifeguard", "upholsterer",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
# Dates are spelled "March 14"; the normaliser also accepts "March 14th" in a reply.
DATES = tuple(f"{m} {d}" for m in MONTHS for d in (3, 9, 14, 21, 27)) + WEEKDAYS
EVENTS = (
    "dentist appointment", "job interview", "sister's wedding", "driving test", "piano recital",
    "housewarming party", "flight to Denver", "cousin's graduation", "marathon", "surgery",
    "book club meeting", "first day at the new gym", "parent-teacher conference", "camping trip",
)
FAVOURITES = {
    "food": ("lasagna", "ramen", "shakshuka", "pierogi", "paella", "falafel", "gnocchi", "jambalaya", "pho",
             "moussaka", "empanadas", "risotto", "biryani", "tamales", "goulash"),
    "colour": ("teal", "maroon", "mustard yellow", "lavender", "burgundy", "turquoise", "olive green", "coral",
               "indigo", "charcoal", "periwinkle", "magenta"),
    "sport": ("badminton", "curling", "water polo", "fencing", "lacrosse", "rugby", "handball", "squash",
              "table tennis", "rowing", "bouldering", "cricket"),
    "fruit": ("mango", "lychee", "persimmon", "papaya", "gooseberry", "pomegranate", "guava", "apricot",
              "dragon fruit", "kumquat", "passion fruit", "nectarine"),
    "board game": ("Scrabble", "Catan", "Carcassonne", "Ticket to Ride", "Pandemic", "Backgammon", "Risk",
                   "Dominion", "Azul", "Othello"),
}
RELATIVES = ("brother", "sister", "cousin", "best friend", "roommate", "neighbour", "nephew", "niece")

SLOTS: dict[str, dict] = {
    "name": {
        "values": FIRST_NAMES,
        "plant": ("I'm {v}, by the way.", "My name is {v}, I don't think I said.", "Oh, I never introduced "
                  "myself: I'm {v}.", "You can call me {v}.", "{v} here, by the way, nice to chat.",
                  "I should say, my name's {v}."),
        "update": ("Actually, everyone calls me {v}, not {old}. I prefer {v}.", "Small correction: I go by {v} "
                   "these days.", "Funny story, I legally changed my name, it's {v} now."),
        "probe": ("Do you remember my name?", "Quick test, what's my name?", "What did I say my name was?",
                  "Bet you forgot my name. What is it?", "Can you remind me what I'm called?"),
        "answer": ("Your name is {v}.", "You're {v}!", "{v}, of course."),
    },
    "pet": {
        "values": PET_NAMES,
        "fields": {"kind": PET_KINDS},
        "plant": ("My {kind} is called {v}.", "I have a {kind} named {v}.", "We just adopted a {kind}, we named "
                  "it {v}.", "Sorry, my {kind} {v} keeps interrupting me.", "I need to feed {v}, my {kind}, soon."),
        "update": ("Actually we renamed the {kind}, it's {v} now.", "The kids started calling our {kind} {v} and "
                   "it stuck, so that's the name now.", "We changed the {kind}'s name to {v}, {old} never suited it."),
        "probe": ("What was my {kind} called again?", "Do you remember my {kind}'s name?", "What's the name of "
                  "my {kind}, remember?", "Can you remind me what my {kind} is called?"),
        "answer": ("Your {kind} is called {v}.", "{v}, your {kind}!", "It's {v}."),
    },
    "city": {
        "values": CITIES,
        "plant": ("I live in {v}.", "It's pretty warm here in {v} today.", "Where I live, in {v}, this is a big "
                  "topic.", "I've lived in {v} for a few years now.", "Here in {v} everyone talks about this."),
        "update": ("Big news, we just moved to {v}.", "I don't live in {old} anymore, I moved to {v} last week.",
                   "We finally relocated, so I'm in {v} now."),
        "probe": ("Which city do I live in, do you remember?", "Where did I say I live?", "Remind me, what city "
                  "am I in?", "Do you recall where I live?"),
        "answer": ("You live in {v}.", "In {v}.", "{v}, right?"),
    },
    "job": {
        "values": JOBS,
        "plant": ("I work as {a} {v}.", "I'm {a} {v} by trade.", "Being {a} {v}, I hear a lot about this.",
                  "My job? I'm {a} {v}.", "I've been {a} {v} for about ten years."),
        "update": ("I just switched careers, I'm {a} {v} now.", "I left the {old} job, I started as {a} {v} on "
                   "Monday.", "New job news: I'm working as {a} {v} now."),
        "probe": ("What do I do for a living, remember?", "Do you remember my job?", "What did I say I work "
                  "as?", "Can you remind me what my job is?"),
        "answer": ("You're {a} {v}.", "You work as {a} {v}.", "{a} {v}."),
    },
    "plan": {
        "values": DATES,
        "fields": {"event": EVENTS},
        "plant": ("My {event} is on {v}.", "I'm a bit nervous, my {event} is on {v}.", "I have my {event} "
                  "coming up on {v}.", "Mark it down: my {event} is {v}."),
        "update": ("Ugh, my {event} got moved to {v}.", "Change of plans, the {event} is now on {v}, not "
                   "{old}.", "They rescheduled my {event} for {v}."),
        "probe": ("When is my {event} again?", "Do you remember when my {event} is?", "What day did I say my "
                  "{event} was?", "Remind me, when's my {event}?"),
        "answer": ("It's on {v}.", "Your {event} is on {v}.", "On {v}."),
    },
    "favourite": {
        "values": None,  # per category, FAVOURITES[cat]
        "fields": {"cat": tuple(FAVOURITES)},
        "plant": ("My favourite {cat} is {v}.", "Nothing beats {v}, it's my favourite {cat}.", "If you ask me, "
                  "the best {cat} is {v}.", "I'm obsessed with {v}, easily my favourite {cat}."),
        "update": ("I've changed my mind, my favourite {cat} is {v} now.", "Honestly I'm over {old}, {v} is my "
                   "favourite {cat} these days.", "New favourite {cat}: {v}."),
        "probe": ("What's my favourite {cat}, do you remember?", "Do you recall my favourite {cat}?", "Which "
                  "{cat} did I say I love most?", "Remind me, what's my favourite {cat}?"),
        "answer": ("Your favourite {cat} is {v}.", "{v}!", "It's {v}."),
    },
    "relative": {
        "values": FIRST_NAMES,
        "fields": {"rel": RELATIVES},
        "plant": ("My {rel} {v} would love this topic.", "My {rel} is called {v}.", "I was just talking to my "
                  "{rel}, {v}, about this.", "My {rel}'s name is {v}, we're very close."),
        "update": None,  # a relative's name does not change
        "probe": ("What's my {rel}'s name again?", "Do you remember my {rel}'s name?", "What did I say my "
                  "{rel} is called?"),
        "answer": ("Your {rel} is {v}.", "{v}, your {rel}.", "It's {v}."),
    },
}
