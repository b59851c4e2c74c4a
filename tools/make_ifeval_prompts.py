"""Writes distil_jax/eval/data/ifeval_distil.jsonl: this project's own IFEval-style prompt set.

    python tools/make_ifeval_prompts.py [--seed 0] [--output distil_jax/eval/data/ifeval_distil.jsonl]

Every prompt is a task (a topic template, English or Chinese) followed by one to three verifiable
instructions drawn from the 25 IFEval types, with the benchmark's instruction ids and argument names.
The set is ours, written from these templates; it is not the benchmark's prompt set and its scores
are not comparable with published IFEval numbers. The output depends only on the seed.
Contents: for each language, every type appears alone in SINGLES_PER_TYPE prompts, and MULTI prompts
combine 2-3 compatible types (see ALONE and GROUPS below); the lines are shuffled with the same seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random

SINGLES_PER_TYPE = 4
MULTI = 60  # per language

TASKS = {
    "en": [
        "Write a short blog post about {t}.",
        "Explain {t} to a curious ten-year-old.",
        "Write a product description for a gadget inspired by {t}.",
        "Give advice to a student who wants to learn about {t}.",
        "Write a letter to a friend describing {t}.",
        "Summarize the history of {t}.",
        "Write a persuasive paragraph arguing that {t} deserves more attention.",
        "Describe a day in the life of someone who works on {t}.",
        "Write a short story that involves {t}.",
        "List the pros and cons of {t}.",
    ],
    "zh": [
        "写一篇关于{t}的短博客。",
        "向一个十岁的孩子解释{t}。",
        "为一款受{t}启发的小工具写一段产品介绍。",
        "给想了解{t}的学生一些建议。",
        "给朋友写一封信，描述{t}。",
        "简要介绍{t}的历史。",
        "写一段有说服力的文字，说明{t}值得更多关注。",
        "描述一位从事{t}相关工作的人的一天。",
        "写一个与{t}有关的小故事。",
        "列出{t}的优点和缺点。",
    ],
}
TOPICS = {
    "en": [
        "public libraries",
        "electric bicycles",
        "coral reefs",
        "home gardening",
        "the night sky",
        "learning a second language",
        "open source software",
        "tea ceremonies",
        "city parks",
        "renewable energy",
        "board games",
        "volunteering",
        "mountain hiking",
        "bread baking",
    ],
    "zh": [
        "公共图书馆",
        "电动自行车",
        "珊瑚礁",
        "家庭园艺",
        "夜空",
        "学习第二语言",
        "开源软件",
        "茶道",
        "城市公园",
        "可再生能源",
        "桌游",
        "志愿服务",
        "登山",
        "烤面包",
    ],
}
KEYWORDS = {
    "en": [
        "community",
        "future",
        "balance",
        "curious",
        "window",
        "river",
        "patience",
        "simple",
        "history",
        "energy",
        "friendly",
        "quiet",
    ],
    "zh": ["社区", "未来", "平衡", "好奇", "窗户", "河流", "耐心", "简单", "历史", "能量"],
}
FORBIDDEN = {
    "en": ["very", "really", "thing", "good", "bad", "important", "amazing", "nice"],
    "zh": ["非常", "东西", "重要", "好的", "坏的", "真的"],
}
LANGUAGES = {
    "fr": ("French", "法语"),
    "de": ("German", "德语"),
    "es": ("Spanish", "西班牙语"),
    "it": ("Italian", "意大利语"),
    "pt": ("Portuguese", "葡萄牙语"),
    "ru": ("Russian", "俄语"),
    "ja": ("Japanese", "日语"),
    "ko": ("Korean", "韩语"),
    "zh": ("Chinese", "中文"),
    "en": ("English", "英文"),
}
ENDINGS = [
    "Any other questions?",
    "Is there anything else I can help with?",
    "That is all for today.",
]


def _relation(rng, lo, hi):
  return rng.choice(["less than", "at least"]), rng.randint(lo, hi)


def _rel_text(relation, lang):
  return {
      ("less than", "en"): "fewer than",
      ("at least", "en"): "at least",
      ("less than", "zh"): "少于",
      ("at least", "zh"): "至少",
  }[(relation, lang)]


def build(instruction_id: str, lang: str, rng: random.Random, task: str) -> tuple[str, dict]:
  """(the instruction's wording, its kwargs) for one instruction id."""
  en = lang == "en"
  if instruction_id == "keywords:existence":
    kws = rng.sample(KEYWORDS[lang], 2)
    return (
        f"Include the keywords {kws[0]} and {kws[1]} in your response."
        if en
        else f"回答中必须包含关键词“{kws[0]}”和“{kws[1]}”。"
    ), {"keywords": kws}
  if instruction_id == "keywords:frequency":
    kw, (rel, n) = rng.choice(KEYWORDS[lang]), _relation(rng, 2, 4)
    return (
        f"The word {kw} should appear {_rel_text(rel, lang)} {n} times."
        if en
        else f"词语“{kw}”出现的次数应{_rel_text(rel, lang)}{n}次。"
    ), {"keyword": kw, "frequency": n, "relation": rel}
  if instruction_id == "keywords:forbidden_words":
    words = rng.sample(FORBIDDEN[lang], 2)
    return (
        f"Do not include the words {words[0]} or {words[1]} in the response."
        if en
        else f"回答中不要出现“{words[0]}”或“{words[1]}”这两个词。"
    ), {"forbidden_words": words}
  if instruction_id == "keywords:letter_frequency":
    letter, (rel, n) = rng.choice("aeinorst"), _relation(rng, 3, 12)
    return (
        f"In your response, the letter {letter} should appear {_rel_text(rel, lang)} {n} times."
        if en
        else f"回答中字母 {letter} 出现的次数应{_rel_text(rel, lang)}{n}次。"
    ), {"letter": letter, "let_frequency": n, "let_relation": rel}
  if instruction_id == "language:response_language":
    code = rng.choice([c for c in LANGUAGES if c != lang])
    name = LANGUAGES[code][0 if en else 1]
    return (
        f"Your ENTIRE response should be in {name}, no other language is allowed."
        if en
        else f"你的整个回答必须使用{name}，不允许使用其他语言。"
    ), {"language": code}
  if instruction_id == "length_constraints:number_sentences":
    rel, n = _relation(rng, 3, 10)
    return (
        f"Your response should contain {_rel_text(rel, lang)} {n} sentences."
        if en
        else f"回答的句子数应{_rel_text(rel, lang)}{n}句。"
    ), {"num_sentences": n, "relation": rel}
  if instruction_id == "length_constraints:number_paragraphs":
    n = rng.randint(2, 5)
    return (
        f"There should be {n} paragraphs. Paragraphs are separated with the markdown divider: ***"
        if en
        else f"回答应分为{n}段，段与段之间用 markdown 分隔线 *** 隔开。"
    ), {"num_paragraphs": n}
  if instruction_id == "length_constraints:number_words":
    rel, n = _relation(rng, 5, 30)
    n *= 10
    return (
        f"Answer with {_rel_text(rel, lang)} {n} words."
        if en
        else f"回答的字数应{_rel_text(rel, lang)}{n}字（每个汉字算一个字）。"
    ), {"num_words": n, "relation": rel}
  if instruction_id == "length_constraints:nth_paragraph_first_word":
    n = rng.randint(2, 4)
    nth = rng.randint(1, n)
    word = rng.choice(
        ["however", "finally", "today", "imagine", "first"]
        if en
        else ["然而", "最后", "今天", "想象", "首先"]
    )
    return (
        f"There should be {n} paragraphs, separated from each other by two new lines. Paragraph {nth} must start with the word {word}."
        if en
        else f"回答应有{n}段，段与段之间空一行。第{nth}段必须以“{word}”开头。"
    ), {"num_paragraphs": n, "nth_paragraph": nth, "first_word": word}
  if instruction_id == "detectable_content:number_placeholders":
    n = rng.randint(1, 4)
    return (
        f"The response must contain at least {n} placeholders in square brackets, such as [address]."
        if en
        else f"回答中至少包含{n}个用方括号表示的占位符，例如 [地址]。"
    ), {"num_placeholders": n}
  if instruction_id == "detectable_content:postscript":
    marker = rng.choice(["P.S.", "P.P.S"])
    return (
        f"At the end of your response, please explicitly add a postscript starting with {marker}"
        if en
        else f"在回答末尾加一段以 {marker} 开头的附言。"
    ), {"postscript_marker": marker}
  if instruction_id == "detectable_format:number_bullet_lists":
    n = rng.randint(2, 5)
    return (
        f"Your answer must contain exactly {n} bullet points. Use markdown bullet points such as:\n* This is point 1."
        if en
        else f"回答必须恰好包含{n}个要点，使用 markdown 列表，例如：\n* 这是第一点。"
    ), {"num_bullets": n}
  if instruction_id == "detectable_format:constrained_response":
    return (
        'Answer with one of the following options: ("My answer is yes.", "My answer is no.", "My answer is maybe.")'
        if en
        else '请只用以下选项之一作答：("My answer is yes.", "My answer is no.", "My answer is maybe.")'
    ), {}
  if instruction_id == "detectable_format:number_highlighted_sections":
    n = rng.randint(1, 4)
    return (
        f"Highlight at least {n} sections in your answer with markdown, i.e. *highlighted section*."
        if en
        else f"用 markdown 至少突出显示{n}个部分，例如 *突出的部分*。"
    ), {"num_highlights": n}
  if instruction_id == "detectable_format:multiple_sections":
    splitter, n = rng.choice(["Section", "SECTION"]), rng.randint(2, 4)
    return (
        f"Your response must have {n} sections. Mark the beginning of each section with {splitter} X, such as: {splitter} 1"
        if en
        else f"回答必须包含{n}个部分，每部分以 {splitter} X 开头，例如：{splitter} 1"
    ), {"section_spliter": splitter, "num_sections": n}
  if instruction_id == "detectable_format:json_format":
    return (
        "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```."
        if en
        else "整个输出必须是 JSON 格式，可以使用 markdown 代码块 ```。"
    ), {}
  if instruction_id == "detectable_format:title":
    return (
        "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."
        if en
        else "回答必须包含一个用双尖括号括起来的标题，例如 <<欢乐之诗>>。"
    ), {}
  if instruction_id == "combination:two_responses":
    return (
        "Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: ******."
        if en
        else "给出两个不同的回答，两个回答之间且仅在它们之间用 6 个星号 ****** 分隔。"
    ), {}
  if instruction_id == "combination:repeat_prompt":
    return (
        (
            "First repeat the request word for word without change, then give your answer (1. do not say any words or characters before repeating the request; 2. the request you need to repeat does not include this sentence)"
            if en
            else "先一字不差地重复下面的请求，然后再作答（1. 重复之前不要说任何话；2. 需要重复的请求不包括这句话）"
        ),
        {"prompt_to_repeat": task},
    )
  if instruction_id == "startend:end_checker":
    phrase = rng.choice(ENDINGS)
    return (
        f"Finish your response with this exact phrase {phrase} No other words should follow this phrase."
        if en
        else f"回答必须以这句英文原样结尾：{phrase} 之后不能再有任何文字。"
    ), {"end_phrase": phrase}
  if instruction_id == "startend:quotation":
    return (
        "Wrap your entire response with double quotation marks."
        if en
        else '用英文双引号 " 把整个回答括起来。'
    ), {}
  if instruction_id == "change_case:capital_word_frequency":
    rel, n = _relation(rng, 2, 10)
    return (
        f"In your response, words with all capital letters should appear {_rel_text(rel, lang)} {n} times."
        if en
        else f"请用英文回答，其中全部大写的单词出现次数应{_rel_text(rel, lang)}{n}次。"
    ), {"capital_frequency": n, "capital_relation": rel}
  if instruction_id == "change_case:english_capital":
    return (
        "Your entire response should be in English, and in all capital letters."
        if en
        else "整个回答必须用英文，并且全部使用大写字母。"
    ), {}
  if instruction_id == "change_case:english_lowercase":
    return (
        "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed."
        if en
        else "整个回答必须用英文，并且全部使用小写字母，不允许出现大写字母。"
    ), {}
  if instruction_id == "punctuation:no_comma":
    return (
        "In your entire response, refrain from the use of any commas."
        if en
        else "整个回答中不要使用英文逗号（,）。"
    ), {}
  raise KeyError(instruction_id)


TYPES = [
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "startend:quotation",
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
]
# Types that fix the whole shape of the answer: never combined with another instruction.
ALONE = {
    "detectable_format:json_format",
    "detectable_format:constrained_response",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:quotation",
}
# At most one type of each group in a prompt (they would contradict or make each other trivial).
GROUPS = [
    {
        "language:response_language",
        "change_case:capital_word_frequency",
        "change_case:english_capital",
        "change_case:english_lowercase",
        "keywords:existence",
        "keywords:frequency",
        "keywords:forbidden_words",
    },
    {
        "length_constraints:number_paragraphs",
        "length_constraints:nth_paragraph_first_word",
        "detectable_format:multiple_sections",
    },
    {"length_constraints:number_words", "length_constraints:number_sentences"},
    {"startend:end_checker", "detectable_content:postscript"},
]
COMPATIBLE = [t for t in TYPES if t not in ALONE]


def _compatible(chosen: list[str], candidate: str) -> bool:
  if candidate in chosen:
    return False
  return not any(candidate in g and any(c in g for c in chosen) for g in GROUPS)


def _prompt(lang, ids, rng, index):
  task = rng.choice(TASKS[lang]).format(t=rng.choice(TOPICS[lang]))
  parts, kwargs = [], []
  for instruction_id in ids:
    wording, kw = build(instruction_id, lang, rng, task)
    parts.append(wording)
    kwargs.append(kw)
  if "combination:repeat_prompt" in ids:
    prompt = parts[0] + "\n\n" + task
  else:
    prompt = task + (" " if lang == "en" else "") + (" " if lang == "en" else "").join(parts)
  return {
      "key": f"distil-{lang}-{index:04d}",
      "prompt": prompt,
      "instruction_id_list": ids,
      "kwargs": kwargs,
      "language": lang,
  }


def make_prompts(seed: int = 0) -> list[dict]:
  rng = random.Random(seed)
  rows = []
  for lang in ("en", "zh"):
    index = 0
    for instruction_id in TYPES:
      for _ in range(SINGLES_PER_TYPE):
        rows.append(_prompt(lang, [instruction_id], rng, index))
        index += 1
    for _ in range(MULTI):
      ids: list[str] = []
      for _ in range(rng.choice((2, 3))):
        options = [t for t in COMPATIBLE if _compatible(ids, t)]
        ids.append(rng.choice(options))
      rows.append(_prompt(lang, ids, rng, index))
      index += 1
  rng.shuffle(rows)  # any prefix (`--limit N`) mixes types and languages
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
      "--output",
      default=os.path.join(
          os.path.dirname(__file__), "..", "distil_jax", "eval", "data", "ifeval_distil.jsonl"
      ),
  )
  args = parser.parse_args()
  rows = make_prompts(args.seed)
  tmp = args.output + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, args.output)
  print(f"wrote {len(rows)} prompts to {os.path.normpath(args.output)}")


if __name__ == "__main__":
  main()
