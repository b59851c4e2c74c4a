"""Our word counter, sentence splitter and language identification (no NLTK data)."""

from distil_jax.eval import text


def test_english_words_are_word_character_runs():
  assert text.words("It's a well-known fact: 3.14!") == [
      "It",
      "s",
      "a",
      "well",
      "known",
      "fact",
      "3",
      "14",
  ]


def test_each_chinese_character_is_a_word_and_latin_runs_stay_whole():
  assert text.count_words("我喜欢猫") == 4
  assert text.words("我用Python写代码") == ["我", "用", "Python", "写", "代", "码"]
  assert text.count_words("") == 0


def test_sentences_end_at_terminators_not_at_abbreviations_initials_or_decimals():
  got = text.split_sentences(
      'Mr. Smith met J. Doe at 3.30 p.m. today. "Really?" she asked!  Yes... fine'
  )
  assert got == [
      "Mr. Smith met J. Doe at 3.30 p.m. today.",
      '"Really?"',
      "she asked!",
      "Yes...",
      "fine",
  ]


def test_chinese_sentences_need_no_space_after_the_terminator():
  assert text.split_sentences("今天下雨。我们在家！你呢？”好的。”") == [
      "今天下雨。",
      "我们在家！",
      "你呢？”",
      "好的。”",
  ]


def test_line_breaks_alone_end_no_sentence_and_blank_text_has_none():
  assert text.count_sentences("a list\nwithout stops\n") == 1
  assert text.count_sentences("   \n ") == 0


def test_language_codes():
  assert text.detect_language("Der schnelle braune Fuchs springt über den faulen Hund.") == "de"
  assert text.detect_language("这是一个用中文写的句子，用来测试语言识别。") == "zh"
  assert text.detect_language("The weather is lovely today and we are going for a walk.") == "en"
  assert text.detect_language("1234 ... !!!") is None
