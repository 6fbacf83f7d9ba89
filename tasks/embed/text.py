"""Embedding task for text: every class prompt (class x template) and the text-intervention caption pairs.

The table stores the text encoder's raw output (schema metadata "normalized": false); readers
normalise. Its key holds the prompts themselves, so the templates and the class names decide it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import __version__
from tasks.embed.images import embedding_table
from tasks.embed.models import LoadedModel, check_model, load_model
from tasks.store.storage import exists, join, write_parquet
from tasks.store.keys import stable_hash

TEXT_SCHEMA = pa.schema([
    ("class", pa.string()), ("label", pa.int32()), ("role", pa.string()), ("pair_id", pa.int32()), ("text", pa.string()),
])


def text_url(store, model, weights_id, classes, prompts: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Where the text table lives; computable without loading the model (the sweep relies on it)."""
    key = stable_hash({
        "model": model, "weights": weights_id, "classes": list(classes), "normalized": False,
        "prompts": prompts[["class", "text"]].to_dict("split")["data"],
        "pairs": pairs.to_dict("split")["data"], "code": __version__,
    })
    return join(store, "embeddings", model, "text", f"prompts-{key}.parquet")


@torch.inference_mode()
def encode_texts_raw(loaded: LoadedModel, texts, batch_size: int = 256) -> np.ndarray:
    """The text encoder's output, not normalised: what is stored at rest."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = loaded.tokenizer(list(texts[start : start + batch_size])).to(loaded.device)
        with loaded.autocast():
            chunks.append(loaded.model.encode_text(tokens, normalize=False).float().cpu().numpy())
    return np.concatenate(chunks)


@task(name="embed-text", task_run_name="embed prompts", tags=["gpu"], cache_policy=NO_CACHE)
def embed_text(classes, prompts: pd.DataFrame, pairs: pd.DataFrame, model: str, pretrained: str, store: str,
               device: str = "auto") -> dict:
    """Class prompts (role class_prompt, one row per class and template) and caption pairs (pair_a / pair_b)."""
    weights_id = check_model(model, pretrained)
    url = text_url(store, model, weights_id, classes, prompts, pairs)
    if exists(url):
        return {"url": url, "embedded": 0}
    label = {name: index for index, name in enumerate(classes)}
    rows = [{"class": name, "role": "class_prompt", "pair_id": -1, "text": text}
            for name, text in zip(prompts["class"], prompts["text"])]
    for pair_id, pair in enumerate(pairs.itertuples(index=False)):
        rows.append({"class": pair[0], "role": "pair_a", "pair_id": pair_id, "text": pair.text_a})
        rows.append({"class": pair[0], "role": "pair_b", "pair_id": pair_id, "text": pair.text_b})
    frame = pd.DataFrame(rows)
    frame.insert(1, "label", frame["class"].map(label).astype("int32"))
    loaded = load_model(model, pretrained, device)
    embeddings = encode_texts_raw(loaded, frame["text"].tolist())
    metadata = {"model": model, "pretrained": pretrained, "weights_id": weights_id, "code_version": __version__,
                "normalized": False, "classes": list(classes)}
    write_parquet(embedding_table(frame, TEXT_SCHEMA, embeddings, metadata), url)
    return {"url": url, "embedded": len(frame)}
