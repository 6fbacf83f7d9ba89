"""Embedding task for text: every class prompt (class x template) and the text-intervention caption pairs.

The table stores the text encoder's raw output (schema metadata "normalized": false); readers
normalise. Its key holds the prompts themselves, so the templates and the class names decide it.
"""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import __version__
from tasks.embed.cache import check_finite, usable
from tasks.embed.images import embedding_table, key_of
from tasks.embed.models import check_model, effective_precision, load_model
from tasks.specs import EmbedSpec
from tasks.store.names import stable_hash
from tasks.store.storage import join, write_parquet
from tasks.vocabulary import model_folder

TEXT_SCHEMA = pa.schema([
    ("class", pa.string()), ("label", pa.int32()), ("role", pa.string()), ("pair_id", pa.int32()), ("text", pa.string()),
])


def text_url(embedding: EmbedSpec, weights_id: str, classes, prompts: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Where the text table lives; computable without loading the model (the sweep relies on it)."""
    key = stable_hash({
        "model": embedding.model, "weights": weights_id, "classes": list(classes), "normalized": False,
        "precision": effective_precision(embedding.device, embedding.precision),
        "prompts": prompts[["class", "text"]].to_dict("split")["data"],
        "pairs": pairs.to_dict("split")["data"], "code": __version__,
    })
    return join(embedding.store, "embeddings", model_folder(embedding.model), "text", f"prompts-{key}.parquet")


@task(name="embed-text", task_run_name="embed prompts", tags=["gpu"], cache_policy=NO_CACHE)
def embed_text(classes, prompts: pd.DataFrame, pairs: pd.DataFrame, embedding: EmbedSpec) -> dict:
    """Class prompts (role class_prompt, one row per class and template) and caption pairs (pair_a / pair_b)."""
    weights_id = check_model(embedding.model, embedding.pretrained)
    url = text_url(embedding, weights_id, classes, prompts, pairs)
    if usable(url, key_of(url)):
        return {"url": url, "embedded": 0}
    label = {name: index for index, name in enumerate(classes)}
    rows = [{"class": name, "role": "class_prompt", "pair_id": -1, "text": text}
            for name, text in zip(prompts["class"], prompts["text"])]
    for pair_id, pair in enumerate(pairs.itertuples(index=False)):
        rows.append({"class": pair[0], "role": "pair_a", "pair_id": pair_id, "text": pair.text_a})
        rows.append({"class": pair[0], "role": "pair_b", "pair_id": pair_id, "text": pair.text_b})
    frame = pd.DataFrame(rows)
    frame.insert(1, "label", frame["class"].map(label).astype("int32"))
    loaded = load_model(embedding.model, embedding.pretrained, embedding.device)
    embeddings = loaded.encode_texts(frame["text"].tolist(), embedding.precision)
    check_finite(embeddings, "prompts and captions", loaded.weights)
    metadata = {"key": key_of(url), "model": embedding.model, "pretrained": embedding.pretrained, "weights_id": weights_id,
                "code_version": __version__,
                "normalized": False, "classes": list(classes)}
    write_parquet(embedding_table(frame, TEXT_SCHEMA, embeddings, metadata), url)
    return {"url": url, "embedded": len(frame)}
