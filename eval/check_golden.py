#!/usr/bin/env python3
"""Validate eval/golden.jsonl against the corpus (standard library only).

Usage: python3 eval/check_golden.py [-v] [golden.jsonl] [corpus_dir]
  -v  also list, for every paraphrase question, the content words it shares
      with its evidence (before the trivial ones are allowed)

Checks every line: JSON parses; exact field set and order; field types;
unique, well-formed ids; tags from the vocabulary; answerable <=> non-empty
evidence and key_facts (and <=> no "unanswerable" tag); every evidence quote
occurs in a corpus body (front matter excluded) after normalisation; every
key fact (at least one "|" alternative) occurs in the normalised evidence of
its question; cross-doc questions quote both documents; chinese questions are
written in Chinese; paraphrase questions share no content words with their
evidence; and the tag counts meet the minimums. Prints per-tag counts and
every problem with its line number; exits 1 if there is any problem.
"""
import json
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERBOSE = "-v" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "-v"]
GOLDEN = Path(ARGS[0]) if len(ARGS) > 0 else HERE / "golden.jsonl"
CORPUS_DIR = Path(ARGS[1]) if len(ARGS) > 1 else HERE.parent / "corpus"

FIELDS = ["id", "question", "reference_answer", "evidence", "answerable", "key_facts", "tags"]
VOCAB = {"numeric", "list", "paraphrase", "cross-doc", "unanswerable", "chinese", "date", "who"}
MINIMUMS = {"numeric": 15, "list": 10, "paraphrase": 10, "cross-doc": 5, "unanswerable": 10,
            "chinese": 5, "date": 4, "who": 4}
MIN_QUESTIONS = 64
MAX_KEY_FACTS = 4

# Words of >= 4 characters that do not count as shared content between a
# paraphrase question and its evidence.
STOP_WORDS = set("""
about above across after again against also among another any anyone anything are around aren't
because been before being below between both could does doing done down during each either else
even ever every few first from further given have having here hers herself himself however into
itself just least less like made make many more most much must neither never next none nothing
once only onto other others ought ours ourselves over own quite rather said same second several
shall should since some such than that their theirs them themselves then there these they this
those though three through thus together toward towards under until upon very want well were what
whatever when whenever where whereas wherever whether which while whom whose will with within
without would your yours yourself yourselves according four five half often
""".split())
# Generic words allowed to be shared by a paraphrase question and its evidence.
TRIVIAL_SHARED = {"china", "chinese"}

DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015"), "-")
QUOTES = {ord("\u2018"): "'", ord("\u2019"): "'", ord("\u201c"): '"', ord("\u201d"): '"'}


def normalise(text):
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(DASHES).translate(QUOTES)
    return re.sub(r"\s+", " ", text).strip().lower()


def content_words(text):
    words = re.findall(r"\w+", normalise(text))
    return {w for w in words if len(w) >= 4 and w not in STOP_WORDS}


def corpus_bodies(directory):
    bodies = {}
    for path in sorted(directory.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if text.startswith("---\n"):
            end = text.find("\n---\n", 4)
            if end == -1:
                raise SystemExit("%s: unterminated front matter" % path)
            text = text[end + 5:]
        bodies[path.name] = normalise(text)
    return bodies


def main():
    problems = []

    def problem(lineno, msg):
        problems.append("line %d: %s" % (lineno, msg))

    if not CORPUS_DIR.is_dir():
        print("corpus directory not found: %s" % CORPUS_DIR)
        return 1
    bodies = corpus_bodies(CORPUS_DIR)
    if len(bodies) < 2:
        print("expected at least two corpus documents in %s, found %d" % (CORPUS_DIR, len(bodies)))
        return 1
    concatenated = "\n".join(bodies.values())

    tag_counts = Counter()
    ids = {}
    records = 0
    lines = GOLDEN.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            problem(lineno, "blank line")
            continue
        records += 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problem(lineno, "invalid JSON: %s" % exc)
            continue
        if not isinstance(rec, dict):
            problem(lineno, "not a JSON object")
            continue
        if list(rec) != FIELDS:
            problem(lineno, "fields %s, expected exactly %s in this order" % (list(rec), FIELDS))
            if set(rec) != set(FIELDS):
                continue

        qid = rec["id"]
        if not isinstance(qid, str) or not re.fullmatch(r"q\d{3,}", qid):
            problem(lineno, "id %r is not of the form q001" % (qid,))
        elif qid in ids:
            problem(lineno, "duplicate id %s (first on line %d)" % (qid, ids[qid]))
        else:
            ids[qid] = lineno
            if qid != "q%03d" % records:
                problem(lineno, "id %s out of sequence, expected q%03d" % (qid, records))
        for field in ("question", "reference_answer"):
            if not isinstance(rec[field], str) or not rec[field].strip():
                problem(lineno, "%s must be a non-empty string" % field)
        answerable = rec["answerable"]
        if not isinstance(answerable, bool):
            problem(lineno, "answerable must be true or false")
        lists_ok = True
        for field in ("evidence", "key_facts", "tags"):
            value = rec[field]
            if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
                problem(lineno, "%s must be a list of non-empty strings" % field)
                lists_ok = False
        if not lists_ok or not isinstance(answerable, bool):
            continue
        evidence, key_facts, tags = rec["evidence"], rec["key_facts"], rec["tags"]

        # tags
        if not tags:
            problem(lineno, "no tags")
        if len(set(tags)) != len(tags):
            problem(lineno, "duplicate tags %s" % tags)
        for tag in tags:
            if tag not in VOCAB:
                problem(lineno, "unknown tag %r" % tag)
        tag_counts.update(set(tags) & VOCAB)

        # answerable <=> evidence and key facts
        if answerable:
            if not evidence:
                problem(lineno, "answerable question without evidence")
            if not key_facts:
                problem(lineno, "answerable question without key_facts")
            if len(key_facts) > MAX_KEY_FACTS:
                problem(lineno, "%d key_facts, at most %d" % (len(key_facts), MAX_KEY_FACTS))
            if "unanswerable" in tags:
                problem(lineno, "answerable question tagged unanswerable")
        else:
            if evidence:
                problem(lineno, "unanswerable question has evidence")
            if key_facts:
                problem(lineno, "unanswerable question has key_facts")
            if "unanswerable" not in tags:
                problem(lineno, "answerable is false but the tag unanswerable is missing")
            # Both tags describe the evidence, which such a question lacks; "chinese" describes the question.
            for tag in ("paraphrase", "cross-doc"):
                if tag in tags:
                    problem(lineno, "tag %s on an unanswerable question" % tag)

        # evidence quotes
        docs_quoted = set()
        norm_evidence = []
        for quote in evidence:
            nq = normalise(quote)
            norm_evidence.append(nq)
            found = [name for name, body in bodies.items() if nq in body]
            if not found:
                where = "spans documents" if nq in concatenated else "not found in any corpus body"
                problem(lineno, "evidence %s: %r" % (where, quote[:80]))
            docs_quoted.update(found)
        joined_evidence = " \n ".join(norm_evidence)

        # key facts
        for fact in key_facts:
            alternatives = [a.strip() for a in fact.split("|")]
            if not all(alternatives):
                problem(lineno, "key fact %r has an empty alternative" % fact)
                continue
            if not any(normalise(a) in joined_evidence for a in alternatives):
                problem(lineno, "key fact %r not found in the evidence" % fact)

        # tag-specific checks
        if "cross-doc" in tags and len(docs_quoted) < 2:
            problem(lineno, "cross-doc question quotes only %s" % (sorted(docs_quoted) or "nothing"))
        if "chinese" in tags and not re.search(r"[\u4e00-\u9fff]", rec["question"]):
            problem(lineno, "chinese-tagged question has no Chinese characters")
        if "paraphrase" in tags:
            shared = content_words(rec["question"]) & content_words(" ".join(evidence))
            if VERBOSE:
                print("paraphrase %s shared: %s" % (qid, ", ".join(sorted(shared)) or "-"))
            shared -= TRIVIAL_SHARED
            if shared:
                problem(lineno, "paraphrase %s shares content words with its evidence: %s"
                        % (qid, ", ".join(sorted(shared))))

    if records < MIN_QUESTIONS:
        problems.append("only %d questions, at least %d required" % (records, MIN_QUESTIONS))
    for tag, minimum in MINIMUMS.items():
        if tag_counts[tag] < minimum:
            problems.append("tag %s: %d questions, at least %d required" % (tag, tag_counts[tag], minimum))

    print("%s: %d questions" % (GOLDEN, records))
    for tag in sorted(VOCAB):
        print("  %-13s %3d  (min %d)" % (tag, tag_counts[tag], MINIMUMS[tag]))
    if problems:
        print("%d problem(s):" % len(problems))
        for p in problems:
            print("  " + p)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
