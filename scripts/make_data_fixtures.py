#!/usr/bin/env python3
"""Write small data files in the exact formats the field ships, as test fixtures.

tests/fixtures/data/
  images/NN.png                 the images (small deterministic patterns)
  records.jsonl                 12 conversations, `messages` layout, image paths
  records.parquet               the same records as Hugging Face `datasets` writes them:
                                `images` a list of Image structs {bytes, path}, `messages`
                                with content parts [{type: image}, {type: text, text}]
                                (two row groups, so readers cross a row-group boundary)
  records-conversations.parquet the same, LLaVA layout: `image` one Image struct,
                                `conversations` from/value with `<image>` tags
  records-texts.parquet         the same, The Cauldron layout: `images` + `texts`
  records-qa.parquet            the same, plain `question`/`answer` columns
  shards/records-{0,1}.tar      the same records as WebDataset shards: key.json + key.png
                                (split 7 + 5, so readers cross a shard boundary)

Every format holds the same PNG bytes and the same turns, so they train to the same
weights. Run on a developer machine (never in CI):
    pip install pyarrow datasets pillow
    python scripts/make_data_fixtures.py
"""
import io
import json
import os
import tarfile

import pyarrow.parquet as pq
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "data")
N = 12
SIZE = 32
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 200, 30)]
NAMES = ["red", "green", "blue", "yellow"]
SHAPES = ["square", "stripe", "dot"]


def image(i):
    """A coloured shape on grey: the answer is in the pixels."""
    colour = COLOURS[i % 4]
    shape = SHAPES[(i // 4) % 3]
    img = PILImage.new("RGB", (SIZE, SIZE), (128, 128, 128))
    px = img.load()
    for y in range(SIZE):
        for x in range(SIZE):
            inside = {
                "square": 8 <= x < 24 and 8 <= y < 24,
                "stripe": 12 <= y < 20,
                "dot": (x - 16) ** 2 + (y - 16) ** 2 < 49,
            }[shape]
            if inside:
                px[x, y] = colour
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def turns(i):
    question = "What colour is the shape?" if i % 2 == 0 else "What shape is it?"
    answer = NAMES[i % 4] if i % 2 == 0 else SHAPES[(i // 4) % 3]
    return question, answer


def main():
    os.makedirs(os.path.join(ROOT, "images"), exist_ok=True)
    os.makedirs(os.path.join(ROOT, "shards"), exist_ok=True)
    pngs = [image(i) for i in range(N)]
    for i, png in enumerate(pngs):
        with open(os.path.join(ROOT, "images", f"{i:02d}.png"), "wb") as f:
            f.write(png)

    # JSONL: the reference.
    with open(os.path.join(ROOT, "records.jsonl"), "w") as f:
        for i in range(N):
            q, a = turns(i)
            row = {"messages": [{"role": "user", "content": "<image>" + q}, {"role": "assistant", "content": a}],
                   "images": [f"images/{i:02d}.png"], "task": "shapes"}
            f.write(json.dumps(row) + "\n")

    def write(ds, name):
        path = os.path.join(ROOT, name)
        # `datasets` writes the Image feature as struct<bytes: binary, path: string>; two
        # row groups of 8 and 4 rows.
        ds.to_parquet(path, batch_size=8)
        meta = pq.ParquetFile(path).metadata
        print(name, meta.num_rows, "rows in", meta.num_row_groups, "row groups")

    image_feature = Image()
    msgs = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
    rows = {"images": [], "messages": [], "task": []}
    for i in range(N):
        q, a = turns(i)
        rows["images"].append([{"bytes": pngs[i], "path": f"{i:02d}.png"}])
        rows["messages"].append([
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": q}]},
            {"role": "assistant", "content": [{"type": "text", "text": a}]},
        ])
        rows["task"].append("shapes")
    features = Features({"images": List(image_feature), "messages": msgs, "task": Value("string")})
    write(Dataset.from_dict(rows, features=features), "records.parquet")

    rows = {"image": [], "conversations": [], "task": []}
    for i in range(N):
        q, a = turns(i)
        rows["image"].append({"bytes": pngs[i], "path": f"{i:02d}.png"})
        rows["conversations"].append([{"from": "human", "value": "<image>" + q}, {"from": "gpt", "value": a}])
        rows["task"].append("shapes")
    features = Features({"image": image_feature,
                         "conversations": List({"from": Value("string"), "value": Value("string")}),
                         "task": Value("string")})
    write(Dataset.from_dict(rows, features=features), "records-conversations.parquet")

    rows = {"images": [], "texts": []}
    for i in range(N):
        q, a = turns(i)
        rows["images"].append([{"bytes": pngs[i], "path": f"{i:02d}.png"}])
        rows["texts"].append([{"user": q, "assistant": a, "source": "fixture"}])
    features = Features({"images": List(image_feature),
                         "texts": List({"user": Value("string"), "assistant": Value("string"),
                                             "source": Value("string")})})
    write(Dataset.from_dict(rows, features=features), "records-texts.parquet")

    rows = {"image": [], "question": [], "answer": []}
    for i in range(N):
        q, a = turns(i)
        rows["image"].append({"bytes": pngs[i], "path": f"{i:02d}.png"})
        rows["question"].append(q)
        rows["answer"].append(a)
    features = Features({"image": image_feature, "question": Value("string"), "answer": Value("string")})
    write(Dataset.from_dict(rows, features=features), "records-qa.parquet")

    # WebDataset: key.json + key.png per sample, two shards.
    for shard, idx in enumerate([range(0, 7), range(7, N)]):
        path = os.path.join(ROOT, "shards", f"records-{shard}.tar")
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            for i in idx:
                q, a = turns(i)
                row = {"messages": [{"role": "user", "content": "<image>" + q},
                                    {"role": "assistant", "content": a}], "task": "shapes"}
                for name, data in [(f"sample{i:04d}.json", json.dumps(row).encode()), (f"sample{i:04d}.png", pngs[i])]:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = 0
                    tar.addfile(info, io.BytesIO(data))
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
