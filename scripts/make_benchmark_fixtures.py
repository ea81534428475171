#!/usr/bin/env python3
"""Write small benchmark files in the exact formats VLMEvalKit and lmms-eval read, as test
fixtures for autoneural-benchmarks (tests/fixtures/benchmarks/, each file a few KB).

VLMEvalKit TSVs, written by pandas as VLMEvalKit's own files are (tab-separated, a field
with a tab, newline or quote quoted):
  mcq.tsv         AI2D/MMStar-like: index, image (base64 PNG; a short value is the index of
                  the row whose image it reuses; a list literal is several images), question,
                  hint, A..E (2 to 5 options, the rest empty), answer, category,
                  l2-category, split; a question holding a tab, a newline and quotes
  ocrbench.tsv    OCRBench-like: answer a Python list literal, category, one Handwritten
                  Mathematical Expression Recognition row
  textvqa.tsv     TextVQA-like: answer a list of ten annotators' answers
  docvqa.tsv      DocVQA-like: answer a list of accepted answers
  chartqa.tsv     ChartQA-like: answer, split (human / augmented)
  mathvista.tsv   MathVista-like: question (the query), choices, answer_option,
                  question_type, answer_type, precision, unit, task, skills: multiple
                  choice, integer, float and list answers
lmms-eval's Hugging Face layout, written with `datasets` (images as {bytes, path} structs):
  ai2d.parquet    the MCQ questions as lmms-eval's AI2D: question, options (list), answer
                  (the option's position, as text), image
  mmstar.parquet  the MCQ questions as MMStar's: index, question with the options inline
                  (`\nOptions: A: .., B: ..`), answer letter, category, l2_category
A predictions file as VLMEvalKit dumps one (pandas, QUOTE_ALL, image dropped, `prediction`
last):
  predictions_mcq.tsv

Run on a developer machine (never in CI):
    pip install pandas pyarrow datasets pillow
    python scripts/make_benchmark_fixtures.py
"""
import base64
import csv
import io
import os

import pandas as pd
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "benchmarks")
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 200, 30), (120, 40, 160), (30, 160, 170)]


def png(i):
    """A 12x12 PNG of one colour with a darker square: distinct bytes per i."""
    img = PILImage.new("RGB", (12, 12), COLOURS[i % len(COLOURS)])
    px = img.load()
    for y in range(2 + i % 3, 6 + i % 3):
        for x in range(2, 6):
            px[x, y] = (10, 10, 10)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def b64(i):
    return base64.b64encode(png(i)).decode()


def write_tsv(df, name):
    # What VLMEvalKit's TSVs are: pandas' default quoting (QUOTE_MINIMAL), NaN as empty.
    df.to_csv(os.path.join(ROOT, name), sep="\t", index=False)


MCQ = [
    # index, image, question, hint, options, answer, category, l2-category, split
    (1, b64(0), "What colour is the background?", None, ["red", "green", "blue", "yellow"], "A",
     "coarse perception", "image scene and topic", "dev"),
    (2, b64(1), "Which shape is drawn?", "The image shows one shape.", ["a square", "a circle"], "A",
     "fine-grained perception", "recognition", "dev"),
    (3, "1", "Is the square dark?", None, ["yes", "no", "cannot tell"], "A",
     "fine-grained perception", "recognition", "dev"),
    (4, b64(2), 'Read the label:\t"tab"\nand "quotes"', 'He said "hi"', ["one", "two", "three", "four", "five"], "E",
     "instance reasoning", "single-instance reasoning", "test"),
    (5, str([b64(3), b64(4)]), "Which image is yellow?", None, ["the first", "the second"], "A",
     "instance reasoning", "cross-instance attribute reasoning", "test"),
    (6, "2", "How many shapes?", None, ["0", "1", "2", "3"], "B",
     "math", "numeric commonsense and calculation", "test"),
]


def mcq_frame():
    rows = []
    for index, image, question, hint, options, answer, cat, l2, split in MCQ:
        row = {"index": index, "image": image, "question": question, "hint": hint}
        for k, letter in enumerate("ABCDE"):
            row[letter] = options[k] if k < len(options) else None
        row.update({"answer": answer, "category": cat, "l2-category": l2, "split": split})
        rows.append(row)
    return pd.DataFrame(rows)


def main():
    os.makedirs(ROOT, exist_ok=True)
    mcq = mcq_frame()
    write_tsv(mcq, "mcq.tsv")

    write_tsv(pd.DataFrame([
        {"index": 0, "image": b64(0), "question": "what is written in the image?",
         "answer": str(["STOP"]), "category": "Regular Text Recognition"},
        {"index": 1, "image": b64(1), "question": "What is the title?",
         "answer": str(["Hello World", "hello  world"]), "category": "Scene Text-centric VQA"},
        {"index": 2, "image": b64(2), "question": "Write out the expression in LaTeX.",
         "answer": str(["\\frac { a } { b }"]), "category": "Handwritten Mathematical Expression Recognition"},
        {"index": 3, "image": "0", "question": "What is the total?",
         "answer": str(["$12.50"]), "category": "Key Information Extraction"},
    ]), "ocrbench.tsv")

    write_tsv(pd.DataFrame([
        {"index": 34602, "image": b64(3), "question": "what is the brand of this camera?",
         "answer": str(["nous les gosses"] * 4 + ["dakota"] * 3 + ["clos culombu"] * 2 + ["dakota digital"])},
        {"index": 34603, "image": b64(4), "question": "what does the small white text spell?",
         "answer": str(["copenhagen"] * 7 + ["thursday"] * 3)},
        {"index": 34604, "image": "34602", "question": "how many cameras are there?",
         "answer": str(["two"] * 2 + ["2"] * 6 + ["1"] * 2)},
    ]), "textvqa.tsv")

    write_tsv(pd.DataFrame([
        {"index": 49153, "image": b64(5), "question": "What is the ‘actual’ value per 1000, during the year 1975?",
         "answer": str(["0.28"])},
        {"index": 24580, "image": b64(0), "question": "What is the name of the company?",
         "answer": str(["itc limited", "ITC Limited"])},
        {"index": 57349, "image": "49153", "question": "Who signed the letter?",
         "answer": str(["J. R. Smith", "Smith"])},
    ]), "docvqa.tsv")

    write_tsv(pd.DataFrame([
        {"index": 0, "image": b64(1), "question": "What is the value of the red bar?", "answer": "100",
         "split": "human"},
        {"index": 1, "image": b64(2), "question": "Which year has the lowest value?", "answer": "2019",
         "split": "augmented"},
        {"index": 2, "image": "0", "question": "What percentage is blue?", "answer": "12%", "split": "human"},
        {"index": 3, "image": "1", "question": "Which country is the largest?", "answer": "Japan",
         "split": "augmented"},
    ]), "chartqa.tsv")

    mc_query = ("Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n"
                "Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5")
    int_query = ("Hint: Please answer the question requiring an integer answer and provide the final value, "
                 "e.g., 1, 2, 3, at the end.\nQuestion: How many objects are left? (Unit: objects)")
    float_query = ("Hint: Please answer the question requiring a floating-point number with two decimal places and "
                   "provide the final value, e.g., 1.23, 1.34, 1.45, at the end.\nQuestion: How much money does Luca "
                   "need? (Unit: $)")
    list_query = ("Hint: Please answer the question requiring a Python list as an answer and provide the final list, "
                  "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.\nQuestion: Between which two years is the peak?")
    write_tsv(pd.DataFrame([
        {"index": 1, "image": b64(2), "question": mc_query, "answer": "8/11",
         "choices": str(["3/11", "8/11", "6/11", "3/5"]), "answer_option": "B", "question_type": "multi_choice",
         "answer_type": "text", "precision": None, "unit": None, "task": "figure question answering",
         "skills": str(["arithmetic reasoning"])},
        {"index": 2, "image": b64(3), "question": int_query, "answer": "14", "choices": None,
         "answer_option": None, "question_type": "free_form", "answer_type": "integer", "precision": None,
         "unit": "objects", "task": "math word problem", "skills": str(["arithmetic reasoning", "numeric commonsense"])},
        {"index": 3, "image": b64(4), "question": float_query, "answer": "1.45", "choices": None,
         "answer_option": None, "question_type": "free_form", "answer_type": "float", "precision": 2.0,
         "unit": "$", "task": "math word problem", "skills": str(["arithmetic reasoning"])},
        {"index": 4, "image": "3", "question": list_query, "answer": "[2007, 2008]", "choices": None,
         "answer_option": None, "question_type": "free_form", "answer_type": "list", "precision": None,
         "unit": None, "task": "figure question answering", "skills": str(["statistical reasoning"])},
    ]), "mathvista.tsv")

    # lmms-eval layouts of the MCQ questions (single-image rows; an index-reused image is
    # the same bytes again).
    images = {1: png(0), 2: png(1), 3: png(0), 4: png(2), 6: png(1)}
    single = [r for r in MCQ if r[0] in images]
    ai2d = Dataset.from_dict(
        {
            "question": [r[2] for r in single],
            "options": [r[4] for r in single],
            "answer": [str("ABCDE".index(r[5])) for r in single],
            "image": [{"bytes": images[r[0]], "path": None} for r in single],
        },
        features=Features({"question": Value("string"), "options": List(Value("string")),
                           "answer": Value("string"), "image": Image()}),
    )
    ai2d.to_parquet(os.path.join(ROOT, "ai2d.parquet"))

    def inline(question, options):
        return question + "\nOptions: " + ", ".join(f"{'ABCDE'[k]}: {o}" for k, o in enumerate(options))

    mmstar = Dataset.from_dict(
        {
            "index": [r[0] for r in single],
            "question": [inline(r[2], r[4]) for r in single],
            "image": [{"bytes": images[r[0]], "path": None} for r in single],
            "answer": [r[5] for r in single],
            "category": [r[6] for r in single],
            "l2_category": [r[7] for r in single],
            "meta_info": [{"source": "fixture", "split": r[8]} for r in single],
            "bench": ["fixture"] * len(single),
        },
        features=Features({"index": Value("int64"), "question": Value("string"), "image": Image(),
                           "answer": Value("string"), "category": Value("string"), "l2_category": Value("string"),
                           "meta_info": {"source": Value("string"), "split": Value("string")},
                           "bench": Value("string")}),
    )
    mmstar.to_parquet(os.path.join(ROOT, "mmstar.parquet"))

    # A predictions file as VLMEvalKit's inference writes it: image dropped, prediction last,
    # `dump` with QUOTE_ALL.
    pred = mcq.drop(columns=["image"])
    pred["prediction"] = ["A", "(B)", "B. no", "The answer is E", "the first", 'I "think"\tC\nor D']
    pred.to_csv(os.path.join(ROOT, "predictions_mcq.tsv"), sep="\t", index=False, quoting=csv.QUOTE_ALL)

    for name in sorted(os.listdir(ROOT)):
        size = os.path.getsize(os.path.join(ROOT, name))
        assert size < 200_000, name
        print(f"{name}: {size} bytes")


if __name__ == "__main__":
    main()
