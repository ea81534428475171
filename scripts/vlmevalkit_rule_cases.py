#!/usr/bin/env python3
"""Run VLMEvalKit's own scoring functions on generated predictions and write what they
decide to tests/fixtures/benchmarks/vlmevalkit_rules.json, which
autoneural-benchmarks/tests/vlmevalkit_parity.rs checks our rules against.

The functions are VLMEvalKit's, loaded from a checkout of it (nothing of its code is copied
here): `can_infer` (vlmeval/utils/matching_util.py), `process_line` with `vqa_score` and
`anls`, `relaxed_correctness`, `process_answer` (vlmeval/dataset/utils/vqa_eval.py) and
`process_punctuation` (vlmeval/smp/misc.py). Run on a developer machine:
    git clone https://github.com/open-compass/VLMEvalKit /tmp/VLMEvalKit
    python scripts/vlmevalkit_rule_cases.py /tmp/VLMEvalKit
"""
import json
import logging
import os
import random
import sys
import types

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "benchmarks",
                   "vlmevalkit_rules.json")


def load_functions(root):
    """VLMEvalKit's modules, with their package imports stubbed (only these few are used)."""
    smp = types.ModuleType("vlmeval.smp")
    log = types.ModuleType("vlmeval.smp.log")
    log.get_logger = logging.getLogger
    misc = open(os.path.join(root, "vlmeval/smp/misc.py")).read()
    exec(misc[misc.index("def process_punctuation"):misc.index("def h2r")], smp.__dict__)

    def istype(s, t):
        if isinstance(s, t):
            return True
        try:
            return isinstance(eval(s), t)
        except Exception:
            return False

    smp.istype = istype
    smp.listinstr = lambda lst, s: any(x in s for x in lst)
    sys.modules.update({"vlmeval": types.ModuleType("vlmeval"), "vlmeval.smp": smp, "vlmeval.smp.log": log})
    matching, vqa = {}, {}
    exec(open(os.path.join(root, "vlmeval/utils/matching_util.py")).read(), matching)
    exec(open(os.path.join(root, "vlmeval/dataset/utils/vqa_eval.py")).read(), vqa)
    return matching, vqa


def main(root):
    matching, vqa = load_functions(root)
    random.seed(0)
    option_sets = [["cat", "dog", "bird", "fish"], ["yes", "no"], ["3/11", "8/11", "6/11", "3/5"],
                   ["red", "green", "blue", "yellow", "a cat"], ["0", "1", "2", "3"]]
    words = ["A", "B", "C", "D", "E", "Z", "a", "b", "the", "answer", "is", "Answer", "correct", "(B)", "B.",
             "**C**", "[D]", "dog", "cat", "Cat", "it", "yes", "no", "8/11", "option", "because", "I", "think",
             "Cannot determine the answer", "not", "sure", ":", "{A}", "#", "!"]
    mcq = []
    for _ in range(900):
        options = random.choice(option_sets)
        choices = {chr(65 + i): v for i, v in enumerate(options)}
        p = " ".join(random.choice(words) for _ in range(random.randint(0, 9)))
        if random.random() < 0.3:
            p = p.replace(" ", random.choice(["", "\n", "  ", ". "]), 1)
        mcq.append({"prediction": p, "options": options, "option": matching["can_infer"](p, dict(choices)) or ""})

    vwords = ["two", "2", "Two.", "the", "a", "dog", "dogs", "1,000", "1000", "3.5", "yes", "Yes!", "no",
              "black-and-white", "black - white", "don't", "dont", "new york", "new\tyork", "it's", "(x)", "a.b",
              "e.g.", "hello, world", "5,5", "none", "zero", "ten", "10"]
    vqa_cases = []
    for _ in range(300):
        p = " ".join(random.choice(vwords) for _ in range(random.randint(0, 3)))
        answers = [" ".join(random.choice(vwords) for _ in range(random.randint(1, 2))) for _ in range(10)]
        for i in range(random.randint(0, 10)):
            if random.random() < 0.7:
                answers[i] = p
        match = vqa["process_line"]({"answer": str(answers), "prediction": p}, "vqa_score")["match"]
        vqa_cases.append({"prediction": p, "answers": answers, "accuracy": sum(match) / len(match),
                          "normalized": vqa["process_answer"](p)})

    awords = ["abc", "abcd", "ABCD ", " abcd", "ab cd", "xyz", "itc limited", "ITC Limited", "0.28", "J. R. Smith",
              "Smith", "", "straße"]
    anls = []
    for _ in range(300):
        answers = random.sample(awords, random.randint(1, 3))
        p = random.choice(awords) + random.choice(["", " ", "x", "  "])
        match = vqa["process_line"]({"answer": str(answers), "prediction": p}, "anls")["match"]
        s = 1 - min(match)
        anls.append({"prediction": p, "answers": answers, "anls": 0.0 if s < 0.5 else s})

    rwords = ["100", "105", "95", "105.01", "94.99", "12%", "0.12", "0.121", "Japan", "japan", "0", "0.0", " 100 ",
              "1e2", "1_000", "nan", "inf", "-5", "5%%", "2019", "2018"]
    relaxed = []
    for _ in range(300):
        t, p = random.choice(rwords), random.choice(rwords)
        relaxed.append({"prediction": p, "target": t, "correct": bool(vqa["relaxed_correctness"](t, p.strip()))})

    with open(OUT, "w") as f:
        json.dump({"mcq": mcq, "vqa": vqa_cases, "anls": anls, "relaxed": relaxed}, f, ensure_ascii=False)
    size = os.path.getsize(OUT)
    assert size < 200_000, size
    print(f"{OUT}: {size} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
