#!/usr/bin/python3
"""Independent reference for Hugging Face PEFT adapters on BERT text classifiers: plain torch, no transformers/peft/safetensors.

Used by PeftReferenceTests to check Microsoft.ML.Peft's export and import against PEFT's arithmetic, stated here from
PEFT's sources (tuners/lora, tuners/ia3, tuners/vera, peft_model.py) and the BERT paper / Transformers' BertModel.

    peft_reference.py score --base BASE_DIR --adapter ADAPTER_DIR --sentences FILE.tsv [--limit N] --out PROBS.json
    peft_reference.py write-lora --base BASE_DIR --out ADAPTER_DIR [--rank 4] [--alpha 8] [--classes 2] [--seed 0]
        [--targets query,value] [--base-name NAME]

BASE_DIR is a Hugging Face BERT checkpoint directory: config.json, model.safetensors (names as BertModel's, an optional
"bert." prefix), vocab.txt. ADAPTER_DIR holds adapter_config.json and adapter_model.safetensors as PEFT's save_pretrained
writes them (keys base_model.model.bert.encoder...lora_A.weight, the head as base_model.model.classifier.weight/.bias).

Scoring: WordPiece tokens ([CLS] text [SEP], truncated to max_sequence_length), BERT's forward with the adapter applied,
the MEAN of the last hidden states over the attention mask (the real tokens), the classifier, softmax. This is the
pooling of Microsoft.ML.Peft's classifiers (adapter_config.json's "microsoft_ml_peft" block says so); Transformers'
BertForSequenceClassification would feed the pooler's tanh(dense([CLS])) instead. Each sentence is run alone, unpadded.

Methods (PEFT's formulas; W is out x in, x a row vector, b the base bias):
  LORA   y = x W^T + b + s * (x A^T) B^T, s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora
         DoRA (use_dora): y = (m / ||W + s B A||_row) * (x (W + s B A)^T) + b, m = lora_magnitude_vector (out), the
         norm taken over each output row
  IA3    l = ia3_l: shape (out, 1) scales the output, bias included: y = (x W^T + b) * l;
         shape (1, in) (feedforward_modules) scales the input: y = (x * l) W^T + b
  VERA   shared base_model.vera_A (r x in_max), base_model.vera_B (out_max x r); per layer vera_lambda_d (r),
         vera_lambda_b (out): y = x W^T + b + lambda_b * ((lambda_d * (x A[:, :in]^T)) B[:out, :]^T)
  PROMPT_TUNING  prompt_embeddings (n x hidden) are prepended to the word embeddings; position ids run 0..n+L-1 over
         the whole sequence, token types 0 for the prompt, attention mask 1; the n prompt positions are left out of the
         pooling (the task pools the hidden states of its own tokens)
  PREFIX_TUNING  prompt_embeddings (n x num_layers*2*hidden) viewed as (n, num_layers*2, heads, head_dim), permuted
         to (num_layers*2, heads, n, head_dim): layer i prepends [2i] to its keys and [2i+1] to its values (mask 1);
         as Transformers' BertModel does with past_key_values, the real tokens' positions start at n
  BITFIT / FULL (this library's own types): the tensors under base_model.model.bert.* replace the base weights
"""

import argparse
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Microsoft.ML.Peft.Tests", "Reference"))
import bert_tokenize  # noqa: E402  (BERT's reference tokenization, standard library only)

PREFIX = "base_model.model."
EXTRA = "microsoft_ml_peft"
DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2), "F64": (torch.float64, 8),
          "I64": (torch.int64, 8), "I32": (torch.int32, 4)}


# ------------------------------------------------------------------ safetensors (the format's few rules)

def read_safetensors(path):
    """8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw data."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, size = DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        count = (end - begin) // size
        values = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype, count=count) if count else torch.empty(0, dtype=dtype)
        tensors[name] = values.reshape(entry["shape"]).to(torch.float32) if dtype.is_floating_point else values.reshape(entry["shape"])
    return tensors


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        raw = tensors[name].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)


# ------------------------------------------------------------------ base model

def load_base(directory):
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    weights = {}
    for name, value in read_safetensors(os.path.join(directory, "model.safetensors")).items():
        weights[name[len("bert."):] if name.startswith("bert.") else name] = value
    vocab = bert_tokenize.read_vocab(os.path.join(directory, "vocab.txt"))
    return config, weights, vocab


def encode(text, vocab, lower_case, max_length):
    ids = []
    for word in bert_tokenize.basic_tokenize(text, lower_case):
        ids.extend(bert_tokenize.wordpiece(word, vocab))
    ids = ids[:max_length - 2]
    return [vocab["[CLS]"]] + ids + [vocab["[SEP]"]]


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


# ------------------------------------------------------------------ adapters

class Adapter:
    """An adapter directory: config, tensors keyed without PEFT's prefix, and how each Linear is changed."""

    def __init__(self, directory, base_config):
        with open(os.path.join(directory, "adapter_config.json"), encoding="utf-8") as f:
            self.config = json.load(f)
        self.type = self.config["peft_type"]
        raw = read_safetensors(os.path.join(directory, "adapter_model.safetensors"))
        self.top = {k: v for k, v in raw.items() if not k.startswith(PREFIX)}
        self.tensors = {k[len(PREFIX):]: v for k, v in raw.items() if k.startswith(PREFIX)}
        self.used = set()
        self.extra = self.config.get(EXTRA) or {}
        self.heads = base_config["num_attention_heads"]
        self.layers = base_config["num_hidden_layers"]
        self.hidden = base_config["hidden_size"]
        for key in ("rank_pattern", "alpha_pattern"):
            if self.config.get(key):
                raise SystemExit(f"{key} is not supported by this reference")
        if self.config.get("fan_in_fan_out"):
            raise SystemExit("fan_in_fan_out is not supported by this reference (BERT's Linears are not Conv1D)")

    def take(self, key):
        self.used.add(key)
        return self.tensors[key]

    def replaced_base_weights(self):
        """BITFIT / FULL: the tensors under bert.* replace the base weights of the same name."""
        if self.type not in ("BITFIT", "FULL"):
            return {}
        return {k[len("bert."):]: self.take(k) for k in list(self.tensors) if k.startswith("bert.")}

    def linear(self, module, x, weight, bias):
        """The Linear `module` (a name under bert., e.g. encoder.layer.0.attention.self.query) of x, adapted."""
        key = "bert." + module
        if self.type == "LORA" and key + ".lora_A.weight" in self.tensors:
            a, b = self.take(key + ".lora_A.weight"), self.take(key + ".lora_B.weight")
            r = a.shape[0]
            alpha = self.config.get("lora_alpha", 8)
            scaling = alpha / math.sqrt(r) if self.config.get("use_rslora", False) else alpha / r
            if self.config.get("use_dora", False):
                merged = weight + scaling * (b @ a)
                magnitude = self.take(key + ".lora_magnitude_vector")
                norm = torch.linalg.norm(merged, dim=1)
                return (magnitude / norm) * (x @ merged.T) + bias
            return x @ weight.T + bias + scaling * ((x @ a.T) @ b.T)
        if self.type == "IA3" and key + ".ia3_l" in self.tensors:
            scale = self.take(key + ".ia3_l")
            if scale.shape[0] == 1 and scale.shape[1] == weight.shape[1] and weight.shape[0] != 1:
                return (x * scale.flatten()) @ weight.T + bias
            return (x @ weight.T + bias) * scale.flatten()
        if self.type == "VERA" and key + ".vera_lambda_d" in self.tensors:
            lambda_d, lambda_b = self.take(key + ".vera_lambda_d"), self.take(key + ".vera_lambda_b")
            shared_a, shared_b = self.top["base_model.vera_A"], self.top["base_model.vera_B"]
            sliced_a = shared_a[:, :weight.shape[1]]
            sliced_b = shared_b[:weight.shape[0], :]
            return x @ weight.T + bias + lambda_b * ((lambda_d * (x @ sliced_a.T)) @ sliced_b.T)
        return x @ weight.T + bias

    def prompt(self):
        """PROMPT_TUNING: the vectors prepended to the word embeddings, or None."""
        return self.top["prompt_embeddings"] if self.type == "PROMPT_TUNING" else None

    def prefixes(self):
        """PREFIX_TUNING: per layer (keys, values), each heads x n x head_dim, or None."""
        if self.type != "PREFIX_TUNING":
            return None
        if self.config.get("prefix_projection", False):
            raise SystemExit("prefix_projection=true: export the projected prefixes (inference form) instead")
        table = self.top["prompt_embeddings"]
        n = table.shape[0]
        head_dim = self.hidden // self.heads
        past = table.view(n, self.layers * 2, self.heads, head_dim).permute(1, 2, 0, 3)
        return [(past[2 * i], past[2 * i + 1]) for i in range(self.layers)]

    def head(self):
        return self.take("classifier.weight"), self.take("classifier.bias")

    def check_all_used(self):
        left = set(self.tensors) - self.used
        if left:
            raise SystemExit(f"adapter tensors not applied by this reference: {sorted(left)[:5]}")


def bert_hidden(config, w, ids, adapter):
    """Last hidden states of the real tokens, 1 x L x hidden (one unpadded sentence)."""
    eps = config.get("layer_norm_eps", 1e-12)
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    head_dim = hidden // heads
    ids = torch.tensor([ids])
    length = ids.shape[1]
    embedded = w["embeddings.word_embeddings.weight"][ids]
    types = torch.zeros_like(ids)
    prompt = adapter.prompt()
    prefixes = adapter.prefixes()
    virtual = 0
    if prompt is not None:
        virtual = prompt.shape[0]
        embedded = torch.cat([prompt.unsqueeze(0), embedded], dim=1)
        types = torch.cat([torch.zeros(1, virtual, dtype=types.dtype), types], dim=1)
    offset = prefixes[0][0].shape[1] if prefixes is not None else 0
    positions = torch.arange(offset, offset + embedded.shape[1])
    x = embedded + w["embeddings.position_embeddings.weight"][positions].unsqueeze(0) + w["embeddings.token_type_embeddings.weight"][types]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    act = gelu if config.get("hidden_act", "gelu") in ("gelu", "gelu_new") else torch.relu
    if config.get("hidden_act") == "gelu_new":
        act = lambda t: 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3)))  # noqa: E731

    def linear(name, t):
        return adapter.linear(name, t, w[name + ".weight"], w[name + ".bias"])

    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        seq = x.shape[1]

        def split(t):
            return t.view(1, t.shape[1], heads, head_dim).transpose(1, 2)

        q = split(linear(p + "attention.self.query", x))
        k = split(linear(p + "attention.self.key", x))
        v = split(linear(p + "attention.self.value", x))
        if prefixes is not None:
            k = torch.cat([prefixes[i][0].unsqueeze(0), k], dim=2)
            v = torch.cat([prefixes[i][1].unsqueeze(0), v], dim=2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)  # every position is a real or virtual token: mask all ones
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, seq, hidden)
        attention = layer_norm(linear(p + "attention.output.dense", context) + x,
                               w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        inner = act(linear(p + "intermediate.dense", attention))
        x = layer_norm(linear(p + "output.dense", inner) + attention, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return x[:, virtual:virtual + length]


def score(args):
    config, weights, vocab = load_base(args.base)
    adapter = Adapter(args.adapter, config)
    weights.update(adapter.replaced_base_weights())
    extra = adapter.extra
    if extra.get("pooling", "mean") != "mean":
        raise SystemExit(f"pooling {extra.get('pooling')} is not known")
    lower = extra.get("lower_case", True) if not args.cased else False
    max_length = extra.get("max_sequence_length", 128)
    head_w, head_b = adapter.head()
    sentences = read_sentences(args.sentences, args.limit)
    rows = []
    with torch.no_grad():
        for text in sentences:
            hidden = bert_hidden(config, weights, encode(text, vocab, lower, max_length), adapter)
            pooled = hidden.mean(1)  # one unpadded sentence: every token is in the attention mask
            rows.append((pooled @ head_w.T + head_b).softmax(-1)[0].tolist())
    adapter.check_all_used()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"sentences": sentences, "probabilities": rows, "class_names": extra.get("class_names")}, f)


def read_sentences(path, limit):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = [line.split("\t")[0] for line in lines[1:] if line.strip()]
    return rows[:limit] if limit else rows


def write_lora(args):
    """A LoRA adapter for sequence classification as PEFT's save_pretrained writes it, with random non-zero A, B and head."""
    config, _, _ = load_base(args.base)
    hidden = config["hidden_size"]
    generator = torch.Generator().manual_seed(args.seed)
    targets = args.targets.split(",")
    tensors = {}
    for i in range(config["num_hidden_layers"]):
        for target in targets:
            name = f"{PREFIX}bert.encoder.layer.{i}.attention.self.{target}"
            tensors[name + ".lora_A.weight"] = torch.randn(args.rank, hidden, generator=generator) / math.sqrt(hidden)
            tensors[name + ".lora_B.weight"] = torch.randn(hidden, args.rank, generator=generator) * 0.05
    tensors[PREFIX + "classifier.weight"] = torch.randn(args.classes, hidden, generator=generator) * 0.5
    tensors[PREFIX + "classifier.bias"] = torch.randn(args.classes, generator=generator) * 0.1
    os.makedirs(args.out, exist_ok=True)
    write_safetensors(os.path.join(args.out, "adapter_model.safetensors"), tensors)
    adapter_config = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": args.base_name, "bias": "none",
        "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
        "lora_alpha": args.alpha, "lora_bias": False, "lora_dropout": 0.0, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": ["classifier", "score"], "peft_type": "LORA",
        "peft_version": "0.17.1", "r": args.rank, "rank_pattern": {}, "revision": None, "target_modules": targets,
        "target_parameters": None, "task_type": "SEQ_CLS", "trainable_token_indices": None, "use_dora": False,
        "use_qalora": False, "qalora_group_size": 16, "use_rslora": False,
    }
    with open(os.path.join(args.out, "adapter_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(adapter_config, indent=2, sort_keys=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("score")
    s.add_argument("--base", required=True)
    s.add_argument("--adapter", required=True)
    s.add_argument("--sentences", required=True)
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--cased", action="store_true")
    s.add_argument("--out", required=True)
    w = commands.add_parser("write-lora")
    w.add_argument("--base", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--rank", type=int, default=4)
    w.add_argument("--alpha", type=int, default=8)
    w.add_argument("--classes", type=int, default=2)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--targets", default="query,value")
    w.add_argument("--base-name", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    score(args) if args.command == "score" else write_lora(args)


if __name__ == "__main__":
    main()
