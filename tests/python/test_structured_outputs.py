"""Structured output on qwen05 through the official openai SDK (issue #20, "Must show").

`client.chat.completions.parse(response_format=PydanticModel)` sends the model's strict JSON
schema as `response_format: {"type": "json_schema", ...}` and validates the answer with pydantic
(bounds, lengths, patterns, enums included), so a parsed object is proof that the server's
grammar kept the model inside the schema. The same prompts sent without the constraint must
break the schema at least once: that shows the constraint, not the prompt, does the work.
Then `json_object`, vLLM's `guided_*` extensions through `extra_body`, and 400s that name
what is wrong with a schema.

qwen05 at temperature 0 is deterministic; the asserts are on structure and validity, never on
wording.
"""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Literal, Optional, Union

import openai
import pytest
from pydantic import BaseModel, Field, ValidationError

# --- the schemas -------------------------------------------------------------------------


class Person(BaseModel):
    """Bounded integer."""

    name: str
    age: int = Field(ge=0, le=130)


class Address(BaseModel):
    street: str
    city: str
    postal_code: str


class Contact(BaseModel):
    """Nested object."""

    name: str
    address: Address


class CityList(BaseModel):
    """Array with exact min/max items."""

    cities: list[str] = Field(min_length=3, max_length=3)


class Review(BaseModel):
    """Literal enum and a bounded integer."""

    sentiment: Literal["positive", "negative", "neutral"]
    stars: int = Field(ge=1, le=5)


class Size(str, Enum):
    S = "S"
    M = "M"
    L = "L"
    XL = "XL"


class Color(Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"
    BLACK = "black"
    WHITE = "white"


class ShirtOrder(BaseModel):
    """Enum classes (string and plain)."""

    size: Size
    color: Color
    quantity: int = Field(ge=1, le=10)


class Book(BaseModel):
    """Nullable (required, may be null) and optional (may be absent) fields."""

    title: str
    author: str
    year: Optional[int] = Field(description="publication year, null if unknown")
    isbn: Optional[str] = None


class Location(BaseModel):
    city: str
    country: str


class Trip(BaseModel):
    """One model used twice: $defs/Location and two $refs to it."""

    origin: Location
    destination: Location


class Flight(BaseModel):
    """String patterns."""

    flight_number: str = Field(pattern=r"^[A-Z]{2}[0-9]{2,4}$")
    date: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class Ingredient(BaseModel):
    name: str
    grams: int = Field(ge=1, le=2000)


class Recipe(BaseModel):
    """Array of objects with min/max items."""

    dish: str
    ingredients: list[Ingredient] = Field(min_length=2, max_length=5)


class Meeting(BaseModel):
    """Boolean, bounded integer, short array."""

    topic: str
    attendees: list[str] = Field(min_length=1, max_length=4)
    online: bool
    duration_minutes: int = Field(ge=5, le=240)


class Weather(BaseModel):
    """Bounded float."""

    city: str
    celsius: float = Field(ge=-90, le=60)
    condition: Literal["sunny", "cloudy", "rainy", "snowy", "windy"]


class Dog(BaseModel):
    kind: Literal["dog"]
    breed: str


class Cat(BaseModel):
    kind: Literal["cat"]
    indoor: bool


class PetOwner(BaseModel):
    """anyOf of two object schemas."""

    owner: str
    pet: Union[Dog, Cat]


# (id, model, prompt, max_tokens). Natural prompts that name the data but not the schema, as a
# client would write them; the schema travels only in response_format.
CASES = [
    ("bounded-int", Person, "Extract the person as JSON: 'Maria Lopez is a 34-year-old engineer from Madrid.'", 60),
    ("nested", Contact, "Extract the contact as JSON: 'Send the parcel to John Smith, 12 Baker Street, London, NW1 6XE.'", 100),
    ("array-min-max", CityList, "Give a JSON list of three large cities in Japan.", 60),
    ("literal-enum", Review, "Classify this review as JSON with a sentiment and a star rating: 'The battery died after two days. Very disappointed.'", 60),
    ("enum-class", ShirtOrder, "Turn this order into JSON: 'Two large blue shirts, please.'", 60),
    ("optional-nullable", Book, "Extract the book as JSON: 'I just finished reading Dune by Frank Herbert.'", 100),
    ("ref-defs", Trip, "Extract the trip as JSON: 'Next week I fly from Lisbon, Portugal to Toronto, Canada.'", 80),
    ("pattern", Flight, "Extract the flight as JSON: 'My flight LH 402 leaves on the 5th of March 2025.'", 60),
    ("array-of-objects", Recipe, "Give a JSON recipe for pancakes with its ingredients in grams.", 160),
    ("bool-int-array", Meeting, "Extract the meeting as JSON: 'Weekly sync with Ana, Ben and Chloe on Zoom, half an hour.'", 80),
    ("bounded-float", Weather, "Extract the weather report as JSON: 'It is 21.5 degrees and cloudy in Berlin today.'", 60),
    ("any-of", PetOwner, "Extract the owner and their pet as JSON: 'Lena has a Labrador called Max.'", 60),
]
IDS = [c[0] for c in CASES]


def messages(prompt):
    return [{"role": "user", "content": prompt}]


# --- constrained: every schema parses ----------------------------------------------------


@pytest.mark.parametrize("case_id,model,prompt,max_tokens", CASES, ids=IDS)
def test_parse_returns_valid_object(qwen, qwen_model, case_id, model, prompt, max_tokens):
    r = qwen.chat.completions.parse(
        model=qwen_model,
        messages=messages(prompt),
        response_format=model,
        temperature=0,
        max_tokens=max_tokens,
    )
    choice = r.choices[0]
    # parse() raises on finish_reason "length"; a schema-forced answer must end by itself.
    assert choice.finish_reason == "stop", choice
    parsed = choice.message.parsed
    assert isinstance(parsed, model), choice.message.content
    # The content is exactly the JSON document (no fences, no prose around it).
    assert model.model_validate(json.loads(choice.message.content)) == parsed
    assert choice.message.refusal is None


def test_stream_with_schema(qwen, qwen_model):
    """The streamed form: the concatenated deltas are the schema-valid document."""
    with qwen.chat.completions.stream(
        model=qwen_model,
        messages=messages(CASES[6][2]),
        response_format=Trip,
        temperature=0,
        max_tokens=80,
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1, "streamed as one chunk"
    assert isinstance(final.choices[0].message.parsed, Trip)
    assert Trip.model_validate_json("".join(deltas)) == final.choices[0].message.parsed


def test_constraints_in_a_batch(qwen, qwen_model):
    """Constrained and free requests decoded in one batch: each constrained answer still fits
    its schema, and the free answer is the one it gets alone (batch invariance)."""
    free = dict(
        model=qwen_model,
        messages=messages("Write a haiku about the sea."),
        temperature=0,
        max_tokens=40,
    )
    alone = qwen.chat.completions.create(**free).choices[0].message.content
    picked = [CASES[i] for i in (0, 2, 6)]
    with ThreadPoolExecutor(len(picked) + 1) as ex:
        futs = [
            ex.submit(
                qwen.chat.completions.parse,
                model=qwen_model,
                messages=messages(prompt),
                response_format=model,
                temperature=0,
                max_tokens=max_tokens,
            )
            for _, model, prompt, max_tokens in picked
        ]
        beside = ex.submit(qwen.chat.completions.create, **free)
        assert beside.result().choices[0].message.content == alone
        for (_, model, _, _), f in zip(picked, futs):
            assert isinstance(f.result().choices[0].message.parsed, model)


# --- unconstrained: the same prompts break the schema ------------------------------------


def first_json_value(text):
    """The first JSON value in `text`, forgiving fences and prose (a generous reading: the
    unconstrained answer gets every chance to count as valid)."""
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return dec.raw_decode(text[i:])[0]
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON value")


def test_unconstrained_breaks_schema(qwen, qwen_model):
    broken = []
    for case_id, model, prompt, max_tokens in CASES:
        r = qwen.chat.completions.create(
            model=qwen_model,
            messages=messages(prompt),
            temperature=0,
            max_tokens=max_tokens + 60,
        )
        text = r.choices[0].message.content or ""
        try:
            model.model_validate(first_json_value(text))
        except (ValueError, ValidationError) as e:
            # Truncated answers do not count: the break must be the model's, not max_tokens'.
            if r.choices[0].finish_reason == "stop":
                broken.append((case_id, type(e).__name__, text[:120]))
    print(f"\nunconstrained answers that break their schema: {len(broken)}/{len(CASES)}")
    for b in broken:
        print("  ", b)
    assert broken, "every unconstrained answer fit its schema: this test shows nothing"


# --- json_object and vLLM's guided_* ------------------------------------------------------


def test_json_object(qwen, qwen_model):
    r = qwen.chat.completions.create(
        model=qwen_model,
        messages=messages("Give a JSON object describing a cat named Tom who is 3 years old."),
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=80,
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_guided_json_optional_field(qwen, qwen_model):
    """vLLM's `guided_json` with pydantic's own (non-strict) schema, where `isbn` is optional:
    not in `required`, so the answer may leave it out."""
    schema = Book.model_json_schema()
    assert "isbn" not in schema["required"]
    r = qwen.chat.completions.create(
        model=qwen_model,
        messages=messages(CASES[5][2]),
        temperature=0,
        max_tokens=100,
        extra_body={"guided_json": schema},
    )
    assert r.choices[0].finish_reason == "stop"
    Book.model_validate_json(r.choices[0].message.content)


def test_guided_regex(qwen, qwen_model):
    pattern = r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"
    r = qwen.chat.completions.create(
        model=qwen_model,
        messages=messages("Make up a US phone number for a pizza place."),
        temperature=0,
        max_tokens=20,
        extra_body={"guided_regex": pattern},
    )
    assert re.fullmatch(pattern, r.choices[0].message.content), r.choices[0].message.content


def test_guided_choice(qwen, qwen_model):
    choices = ["positive", "negative", "neutral"]
    r = qwen.chat.completions.create(
        model=qwen_model,
        messages=messages("What is the sentiment of this review? 'Great food and friendly staff!'"),
        temperature=0,
        max_tokens=10,
        extra_body={"guided_choice": choices},
    )
    assert r.choices[0].message.content in choices


LARK = r"""
start: "The answer is " NUMBER "."
NUMBER: /[0-9]{1,4}/
"""
GBNF = r"""
root ::= answer
answer ::= "yes" | "no"
"""


@pytest.mark.parametrize(
    "grammar,prompt,full",
    [
        (LARK, "What is 7 times 6?", r"The answer is [0-9]{1,4}\."),
        (GBNF, "Is Paris the capital of France? Answer yes or no.", r"yes|no"),
    ],
    ids=["lark", "gbnf"],
)
def test_guided_grammar(qwen, qwen_model, grammar, prompt, full):
    r = qwen.chat.completions.create(
        model=qwen_model,
        messages=messages(prompt),
        temperature=0,
        max_tokens=20,
        extra_body={"guided_grammar": grammar},
    )
    assert re.fullmatch(full, r.choices[0].message.content), r.choices[0].message.content


def test_completions_guided_choice(qwen, qwen_model):
    """The legacy completions endpoint takes the same extensions."""
    r = qwen.completions.create(
        model=qwen_model,
        prompt="Q: Is water wet? Answer yes or no.\nA:",
        temperature=0,
        max_tokens=5,
        extra_body={"guided_choice": [" yes", " no"]},
    )
    assert r.choices[0].text in (" yes", " no")


def test_completions_response_format(qwen, qwen_model):
    # additionalProperties false: pydantic's own schema leaves extra keys open, and the model
    # would use them (it adds a "website" and runs out of tokens).
    schema = {**Person.model_json_schema(), "additionalProperties": False}
    r = qwen.completions.create(
        model=qwen_model,
        prompt="A JSON record for the person 'Ada Lovelace, aged 36':\n",
        temperature=0,
        max_tokens=60,
        extra_body={
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "Person", "schema": schema},
            }
        },
    )
    assert r.choices[0].finish_reason == "stop"
    Person.model_validate_json(r.choices[0].text)


# --- errors: 400s that name the problem ---------------------------------------------------


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "bad", "schema": schema, "strict": True}}


@pytest.mark.parametrize(
    "extra,needles",
    [
        # Not a JSON-schema type at all.
        ({"response_format": schema_format({"type": "object", "properties": {"a": {"type": "banana"}}})}, ["banana"]),
        # A valid keyword the grammar cannot enforce: refused, never decoded unconstrained.
        ({"response_format": schema_format({"type": "array", "items": {"type": "integer"}, "uniqueItems": True})}, ["uniqueItems"]),
        ({"guided_regex": "([a-z]+"}, ["guided_regex"]),
        ({"guided_grammar": "start: undefined_rule"}, ["guided_grammar", "undefined_rule"]),
        ({"guided_choice": []}, ["guided_choice"]),
    ],
    ids=["unknown-type", "unenforceable-keyword", "bad-regex", "bad-grammar", "empty-choice"],
)
def test_invalid_constraint_is_400(qwen, qwen_model, extra, needles):
    with pytest.raises(openai.BadRequestError) as e:
        qwen.chat.completions.create(
            model=qwen_model,
            messages=messages("Hello"),
            max_tokens=5,
            extra_body=extra,
        )
    assert e.value.status_code == 400
    assert e.value.type == "invalid_request_error", e.value.body
    # The message (or the error's `param`) names the field or keyword at fault.
    said = f"{e.value.message} {e.value.param}"
    assert any(n in said for n in needles), e.value.body
