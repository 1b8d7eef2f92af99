"""Writes corral/data/demo_batch.jsonl: a deterministic 1,200-line mixed batch for `corral demo`."""

from __future__ import annotations

import json
import random
from pathlib import Path

LINES = 1200
OUT = Path(__file__).resolve().parent.parent / "corral" / "data" / "demo_batch.jsonl"

# A long shared system prompt, so the simulator's prompt cache (and cached-input pricing) shows.
STYLE_GUIDE = ("You are a careful assistant working through an offline evaluation set. "
               "Answer precisely, state assumptions, and keep the answer self-contained. ") * 8

TASKS = {
    "math": ["Prove that the square root of {n} is irrational when {n} is not a perfect square.",
             "Compute the integral of x^{n} from 0 to 1 and explain each step.",
             "Solve the equation {n}x + 7 = 3x - {n} and check the result.",
             "함수 f(x) = x^{n} 의 0부터 1까지의 적분을 구하세요.",
             "다음 방정식을 풀어 주세요: {n}x - 4 = 20."],
    "code": ["Write a Python function that returns the {n}th Fibonacci number iteratively.",
             "Refactor this SQL query to avoid a correlated subquery: SELECT * FROM t{n}.",
             "Find the bug: for i in range({n}): total =+ i",
             "정렬된 리스트에서 이진 탐색을 하는 파이썬 함수 코드를 작성하세요."],
    "summarization": ["Summarize in three key points: corral run {n} processed a batch of "
                      "requests across several workers, kept inside rate limits, and wrote "
                      "a cost report per model with savings against list prices.",
                      "TL;DR of this note #{n}: the meeting moved the launch by two weeks.",
                      "다음 회의록을 요약해 주세요: {n}번 회의에서 출시 일정이 2주 연기되었다."],
    "creative": ["Write a haiku about batch job number {n}.",
                 "Write a short story of 100 words about a lighthouse keeper named {n}.",
                 "달과 바다에 대한 짧은 시를 써 주세요 ({n})."],
    "general": ["What is the capital of country number {n} in an alphabetical list?",
                "Give three tips for writing clear emails (variant {n}).",
                "Translate 'good morning' into {n} languages you know well."],
}
EXPLICIT = ["gpt-5.4", "claude-opus-4.6", "deepseek-v3.2"]
ALIASES = ["fast-coder", "reasoner", "cheap", "summarizer", "mini"]


def make_line(index: int, rng: random.Random) -> dict:
    """One request line; about half `auto`, the rest explicit names and aliases."""
    kind = rng.choice(list(TASKS))
    prompt = rng.choice(TASKS[kind]).format(n=rng.randint(2, 99))
    roll = rng.random()
    model = "auto" if roll < 0.5 else rng.choice(EXPLICIT) if roll < 0.75 else rng.choice(ALIASES)
    messages = [{"role": "user", "content": prompt}]
    if rng.random() < 0.4:
        messages.insert(0, {"role": "system", "content": STYLE_GUIDE})
    body = {"model": model, "messages": messages, "max_tokens": rng.choice([64, 128, 256]),
            "temperature": 0.2}
    line = {"custom_id": f"demo-{index:05d}", "method": "POST", "url": "/v1/chat/completions",
            "body": body}
    if rng.random() < 0.2:
        line["metadata"] = {"task": kind}
    return line


def main() -> None:
    rng = random.Random(20261127)
    with open(OUT, "w", encoding="utf-8") as out:
        for index in range(1, LINES + 1):
            out.write(json.dumps(make_line(index, rng), ensure_ascii=False) + "\n")
    print(f"wrote {LINES} lines to {OUT}")


if __name__ == "__main__":
    main()
