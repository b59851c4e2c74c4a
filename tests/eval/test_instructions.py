"""Each of the 25 IFEval checkers on hand-made responses that follow and that break the instruction."""

import pytest

from distil_jax.eval.instructions import CHECKERS, Instruction, kwarg_names, make_instruction

# The benchmark's instruction ids and argument names: a prompt file written for it must load here.
BENCHMARK_ARGS = {
    "keywords:existence": ("keywords",),
    "keywords:frequency": ("keyword", "frequency", "relation"),
    "keywords:forbidden_words": ("forbidden_words",),
    "keywords:letter_frequency": ("letter", "let_frequency", "let_relation"),
    "language:response_language": ("language",),
    "length_constraints:number_sentences": ("num_sentences", "relation"),
    "length_constraints:number_paragraphs": ("num_paragraphs",),
    "length_constraints:number_words": ("num_words", "relation"),
    "length_constraints:nth_paragraph_first_word": (
        "num_paragraphs",
        "nth_paragraph",
        "first_word",
    ),
    "detectable_content:number_placeholders": ("num_placeholders",),
    "detectable_content:postscript": ("postscript_marker",),
    "detectable_format:number_bullet_lists": ("num_bullets",),
    "detectable_format:constrained_response": (),
    "detectable_format:number_highlighted_sections": ("num_highlights",),
    "detectable_format:multiple_sections": ("section_spliter", "num_sections"),
    "detectable_format:json_format": (),
    "detectable_format:title": (),
    "combination:two_responses": (),
    "combination:repeat_prompt": ("prompt_to_repeat",),
    "startend:end_checker": ("end_phrase",),
    "startend:quotation": (),
    "change_case:capital_word_frequency": ("capital_frequency", "capital_relation"),
    "change_case:english_capital": (),
    "change_case:english_lowercase": (),
    "punctuation:no_comma": (),
}

EN = "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden porch."

# (id, kwargs, response, expected)
CASES = [
    (
        "keywords:existence",
        {"keywords": ["river", "Patience"]},
        "Patience is a river of calm.",
        True,
    ),
    ("keywords:existence", {"keywords": ["river", "patience"]}, "A river of calm.", False),
    ("keywords:existence", {"keywords": ["社区"]}, "我们的社区很美。", True),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 2, "relation": "at least"},
        "Cat and cat.",
        True,
    ),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 2, "relation": "at least"},
        "One cat.",
        False,
    ),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 2, "relation": "less than"},
        "One cat.",
        True,
    ),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 2, "relation": "less than"},
        "cat cat cat",
        False,
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["good", "bad"]},
        "It was goodness itself.",
        True,
    ),
    ("keywords:forbidden_words", {"forbidden_words": ["good", "bad"]}, "It was GOOD.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["重要"]}, "这件事很重要吗", False),
    ("keywords:forbidden_words", {"forbidden_words": ["重要"]}, "这件事很要紧", True),
    (
        "keywords:letter_frequency",
        {"letter": "a", "let_frequency": 3, "let_relation": "at least"},
        "A banana",
        True,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "a", "let_frequency": 3, "let_relation": "less than"},
        "A banana",
        False,
    ),
    (
        "language:response_language",
        {"language": "fr"},
        "Je pense que la bibliothèque publique est un lieu merveilleux pour toute la famille.",
        True,
    ),
    ("language:response_language", {"language": "fr"}, EN, False),
    (
        "language:response_language",
        {"language": "zh"},
        "我认为公共图书馆是全家人都喜欢的好地方。",
        True,
    ),
    (
        "language:response_language",
        {"language": "en"},
        "12345 !!! 678",
        True,
    ),  # nothing to judge: passes
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "One. Two!",
        True,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "One. Two! Three?",
        False,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "at least"},
        "一。二！三？",
        True,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 2, "relation": "less than"},
        "Mr. Smith paid $3.14 to Dr. Jones.",
        True,
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "First part.\n***\nSecond part.",
        True,
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "First.\n***\n\n***\nSecond.",
        False,
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "***\nFirst.\n***\nSecond.\n***",
        True,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "one two three four five",
        True,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "one two three four",
        False,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "我喜欢吃苹果",
        True,
    ),  # 6 hanzi
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "less than"},
        "猫 and dog",
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"},
        'It rained.\n\n"However, we went out.',
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"},
        "It rained.\n\nBut we went out.",
        False,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "however"},
        "It rained.\n\nHowever we went out.",
        False,
    ),  # right word, wrong paragraph count
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "然而"},
        "今天下雨。\n\n“然而我们还是出门了。",
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "然而"},
        "今天下雨。\n\n我们然而还是出门了。",
        False,
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], see you at [place].",
        True,
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], see you.",
        False,
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Hello.\n\nP.S. Bring cake.",
        True,
    ),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hello.\np.p.s. more", True),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Hello, no postscript.",
        False,
    ),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro\n* one\n- two\n", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two\n* three", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "**bold** line\n* one", True),
    ("detectable_format:constrained_response", {}, "After thought: My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "My answer is perhaps.", False),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "*one* and **two**",
        True,
    ),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "*one* and ** **",
        False,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nIntro\nSection 2\nBody",
        True,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1 only",
        False,
    ),
    ("detectable_format:json_format", {}, '```json\n{"a": {"b": [1, {"c": "```"}]}}\n```', True),
    ("detectable_format:json_format", {}, '  {"nested": {"x": 1}}  \n', True),
    ("detectable_format:json_format", {}, 'Here it is: ```json\n{"a": 1}\n```', False),
    ("detectable_format:json_format", {}, '```\n{"a": 1,}\n```', False),
    ("detectable_format:title", {}, "<<A Poem of Joy>>\nRoses are red.", True),
    ("detectable_format:title", {}, "<<   >>\nRoses.", False),
    ("detectable_format:title", {}, "<<broken\ntitle>>", False),
    ("combination:two_responses", {}, "Answer one.\n******\nAnswer two.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "One.\n******\n\n******\nTwo.", False),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a poem."},
        "write a poem. Roses are red.",
        True,
    ),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a poem."},
        "Sure! Write a poem.",
        False,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "Done. Any other questions?  \n",
        True,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        '"Done. any other questions?"',
        True,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "Any other questions? Bye.",
        False,
    ),
    ("startend:quotation", {}, '"Wrapped whole."\n', True),
    ("startend:quotation", {}, '"Half wrapped.', False),
    ("startend:quotation", {}, '"', False),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "THIS is VERY loud",
        True,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "THIS is VERY loud",
        False,
    ),
    ("change_case:english_capital", {}, EN.upper(), True),
    ("change_case:english_capital", {}, EN, False),
    (
        "change_case:english_capital",
        {},
        "我认为公共图书馆是全家人都喜欢的好地方。 OK",
        False,
    ),  # mixed scripts
    ("change_case:english_lowercase", {}, EN.lower(), True),
    ("change_case:english_lowercase", {}, EN, False),
    (
        "change_case:english_lowercase",
        {},
        "la bibliothèque publique est un lieu merveilleux pour toute la famille",
        False,
    ),
    ("punctuation:no_comma", {}, "No commas here. 中文逗号，不算。", True),
    ("punctuation:no_comma", {}, "One, two.", False),
]


def test_the_25_benchmark_ids_with_the_benchmark_argument_names():
  assert len(CHECKERS) == 25
  assert {i: kwarg_names(i) for i in CHECKERS} == BENCHMARK_ARGS


def test_every_type_has_a_passing_and_a_failing_case():
  assert {c[0] for c in CASES if c[3]} == set(CHECKERS)
  assert {c[0] for c in CASES if not c[3]} == set(CHECKERS)


@pytest.mark.parametrize(
    "instruction_id,kwargs,response,expected",
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_checker(instruction_id, kwargs, response, expected):
  assert make_instruction(instruction_id, kwargs).check(response) is expected


@pytest.mark.parametrize("instruction_id,kwargs,response,expected", [c for c in CASES if c[3]][::3])
def test_trailing_whitespace_changes_no_verdict(instruction_id, kwargs, response, expected):
  assert make_instruction(instruction_id, kwargs).check(response + "  \n") is expected


@pytest.mark.parametrize("instruction_id", sorted(CHECKERS))
def test_an_empty_response_follows_nothing(instruction_id):
  # Even "less than N words" or "no comma": an empty answer is not an answer (the benchmark's rule).
  kwargs = next(c[1] for c in CASES if c[0] == instruction_id)
  assert make_instruction(instruction_id, kwargs).check("") is False
  assert make_instruction(instruction_id, kwargs).check(" \n\t") is False


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="unknown instruction id 'keywords:nope'"):
    make_instruction("keywords:nope", {})
  with pytest.raises(ValueError, match=r"missing \['relation'\]"):
    make_instruction("length_constraints:number_words", {"num_words": 3})
  with pytest.raises(ValueError, match=r"unknown \['colour'\]"):
    make_instruction("punctuation:no_comma", {"colour": "red"})
  with pytest.raises(ValueError, match="relation must be one of"):
    make_instruction("length_constraints:number_words", {"num_words": 3, "relation": "more than"})


def test_none_arguments_of_the_benchmark_file_are_dropped():
  ins = make_instruction("punctuation:no_comma", {"num_words": None, "keywords": None})
  assert ins == Instruction("punctuation:no_comma", {})
