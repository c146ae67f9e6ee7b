#!/usr/bin/python3
"""PyTorch baseline for the LoRA training-step benchmark.

Builds the same model as Microsoft.ML.Peft (a BERT encoder read from the sentence-transformers ONNX export, mean
pooling over the attention mask, dropout, Linear head; LoRA on query and value) in plain torch modules, then times
training steps on a synthetic batch and prints one JSON line. With --dump-hidden it writes the eval-mode
last_hidden_state of a small fixed batch instead, for comparison with another implementation's forward pass.

Written against the torch 1.13 API (no scaled_dot_product_attention: attention is softmax(QK^T/sqrt(d) + mask) V).
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

# Bert-base-uncased vocabulary: [CLS] this is a test . [SEP]
DEFAULT_IDS = "101,2023,2003,1037,3231,1012,102"


# ---------------------------------------------------------------------------------------------------------------------
# ONNX import: the same name mapping as src/Microsoft.ML.Peft/Models/OnnxBertImporter.cs.
# ---------------------------------------------------------------------------------------------------------------------

def _is_parameter_name(name):
    return name.endswith(".weight") or name.endswith(".bias")


def import_onnx(path):
    """Returns (config dict, {Hugging Face name: float32 numpy array}).

    Embeddings, biases and LayerNorms are named initializers. MatMul weights are anonymous [in, out] initializers; each
    is named after the `...bias` initializer of the Add that consumes the MatMul's output, and transposed to [out, in].
    """
    model = onnx.load(path)
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value":
                    constants.setdefault(node.output[0], attr.t)

    consumers = {}
    producers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producers.setdefault(name, node)

    def array(name):
        return numpy_helper.to_array(constants[name])

    weights = {}
    for name, tensor in constants.items():
        if _is_parameter_name(name) and tensor.data_type == onnx.TensorProto.FLOAT:
            weights[name] = array(name).astype(np.float32)

    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        weight_name = node.input[1]
        if weight_name not in constants or len(constants[weight_name].dims) != 2:
            continue
        bias_name = None
        for user in consumers.get(node.output[0], []):
            if user.op_type != "Add":
                continue
            for name in user.input:
                if name.endswith(".bias") and name in constants:
                    bias_name = name
                    break
            if bias_name is not None:
                break
        if bias_name is None:
            continue
        if _is_parameter_name(weight_name):
            weights.pop(weight_name, None)  # a named [in, out] matrix: keep only the transposed copy
        weights[bias_name[: -len(".bias")] + ".weight"] = np.ascontiguousarray(array(weight_name).T.astype(np.float32))

    key = "embeddings.word_embeddings.weight"
    if key not in weights:
        prefixed = next((k for k in weights if k.endswith(key)), None)
        if prefixed is None:
            raise ValueError(f"'{path}' does not look like a BERT encoder: no '{key}' initializer")
        prefix = prefixed[: -len(key)]
        weights = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in weights.items()}

    hidden = weights[key].shape[1]
    layers = 0
    while f"encoder.layer.{layers}.attention.output.LayerNorm.weight" in weights:
        layers += 1
    if layers == 0:
        raise ValueError(f"'{path}' has no encoder layers")
    ops = {node.op_type for node in graph.node}
    config = {
        "vocab_size": weights[key].shape[0],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": weights["encoder.layer.0.intermediate.dense.bias"].shape[0],
        "max_position_embeddings": weights["embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": weights["embeddings.token_type_embeddings.weight"].shape[0],
        "num_attention_heads": _find_heads(graph, constants, producers, hidden),
        "layer_norm_eps": _find_layer_norm_eps(graph, constants, producers),
        "hidden_act": "gelu_new" if ("Tanh" in ops and "Erf" not in ops) else "gelu",
    }
    return config, weights


def _find_heads(graph, constants, producers, hidden):
    """The head count from the [batch, length, heads, head_size] Reshape before attention, else from the
    sqrt(head_size) constant that the attention scores are divided by."""

    def scalar(name):
        if name in constants:
            value = numpy_helper.to_array(constants[name]).reshape(-1)
            return int(value[0]) if value.size == 1 and value.dtype.kind in "iu" else None
        node = producers.get(name)
        if node is not None and node.op_type in ("Unsqueeze", "Cast", "Identity"):
            return scalar(node.input[0])
        return None

    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) != 2:
            continue
        if node.input[1] in constants:
            dims = [int(v) for v in numpy_helper.to_array(constants[node.input[1]]).reshape(-1)]
        elif node.input[1] in producers and producers[node.input[1]].op_type == "Concat":
            dims = [scalar(i) for i in producers[node.input[1]].input]
        else:
            continue
        if len(dims) == 4 and dims[2] and dims[3] and dims[2] > 0 and dims[3] > 0 and dims[2] * dims[3] == hidden:
            return dims[2]
    for node in graph.node:
        if node.op_type != "Div" or len(node.input) != 2 or node.input[1] not in constants:
            continue
        value = numpy_helper.to_array(constants[node.input[1]]).reshape(-1)
        if value.size != 1 or value.dtype != np.float32:
            continue
        head_size = round(float(value[0]) ** 2)
        if head_size > 0 and abs(float(value[0]) ** 2 - head_size) < 1e-3 and hidden % head_size == 0:
            return hidden // head_size
    raise ValueError("the ONNX graph does not show the number of attention heads")


def _find_layer_norm_eps(graph, constants, producers):
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            for attr in node.attribute:
                if attr.name == "epsilon":
                    return float(attr.f)
            return 1e-5
    for node in graph.node:  # decomposed: Sqrt(Add(variance, epsilon))
        if node.op_type != "Sqrt":
            continue
        add = producers.get(node.input[0])
        if add is None or add.op_type != "Add":
            continue
        for name in add.input:
            if name in constants and constants[name].data_type == onnx.TensorProto.FLOAT:
                value = numpy_helper.to_array(constants[name]).reshape(-1)
                if value.size == 1:
                    return float(value[0])
    return 1e-12


# ---------------------------------------------------------------------------------------------------------------------
# Model: Hugging Face parameter names (embeddings.word_embeddings.weight, encoder.layer.0.attention.self.query.weight).
# ---------------------------------------------------------------------------------------------------------------------

class LoraLayer(nn.Module):
    """delta(x) = scaling * B(A(dropout(x))); A Kaiming-uniform (a = sqrt(5), nn.Linear's default), B zeros."""

    def __init__(self, in_features, out_features, rank, alpha, dropout):
        super().__init__()
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / rank
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        return self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


class PeftLinear(nn.Linear):
    """nn.Linear (weight [out, in], bias) that may carry a LoRA branch."""

    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features)
        self.lora = None

    def forward(self, x):
        out = F.linear(x, self.weight, self.bias)
        if self.lora is not None:
            out = out + self.lora(x)
        return out


class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.head_size = h // self.heads
        self.query = PeftLinear(h, h)
        self.key = PeftLinear(h, h)
        self.value = PeftLinear(h, h)
        self.dropout = nn.Dropout(c["attention_probs_dropout_prob"])

    def forward(self, hidden, additive_mask):
        b, n, _ = hidden.shape

        def split(projection):
            return projection(hidden).view(b, n, self.heads, self.head_size).transpose(1, 2)

        q, k, v = split(self.query), split(self.key), split(self.value)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size) + additive_mask
        probs = self.dropout(torch.softmax(scores, dim=-1))
        return torch.matmul(probs, v).transpose(1, 2).reshape(b, n, self.heads * self.head_size)


class BertResidualOutput(nn.Module):
    """dense, dropout, residual, LayerNorm (post-LN)."""

    def __init__(self, in_features, c):
        super().__init__()
        self.dense = PeftLinear(in_features, c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertResidualOutput(c["hidden_size"], c)

    def forward(self, hidden, additive_mask):
        return self.output(self.self(hidden, additive_mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = PeftLinear(c["hidden_size"], c["intermediate_size"])
        self.approximate = "tanh" if c["hidden_act"] == "gelu_new" else "none"

    def forward(self, hidden):
        return F.gelu(self.dense(hidden), approximate=self.approximate)


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertResidualOutput(c["intermediate_size"], c)

    def forward(self, hidden, additive_mask):
        attended = self.attention(hidden, additive_mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c["num_hidden_layers"])])

    def forward(self, hidden, additive_mask):
        for layer in self.layer:
            hidden = layer(hidden, additive_mask)
        return hidden


class BertModel(nn.Module):
    """forward(input_ids, attention_mask, token_type_ids) -> last_hidden_state [batch, length, hidden]."""

    def __init__(self, c):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)

    def forward(self, input_ids, attention_mask, token_type_ids):
        embedded = self.embeddings(input_ids, token_type_ids)
        additive = ((1.0 - attention_mask.to(embedded.dtype)) * -1e9)[:, None, None, :]
        return self.encoder(embedded, additive)


class SequenceClassifier(nn.Module):
    """Encoder, mean pooling over the attention mask, dropout, Linear head."""

    def __init__(self, c, classes, head_dropout):
        super().__init__()
        self.bert = BertModel(c)
        self.dropout = nn.Dropout(head_dropout)
        self.classifier = nn.Linear(c["hidden_size"], classes)

    @staticmethod
    def pool(hidden, attention_mask):
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(self.pool(hidden, attention_mask)))


def load_weights(bert, weights):
    """Strict: every encoder parameter must be in the ONNX file with the same shape. ONNX weights that the encoder
    has no place for are only allowed for the pooler (the export carries one; the classifier does not use it)."""
    params = dict(bert.named_parameters())
    missing = [n for n in params if n not in weights]
    mismatched = [f"{n}: onnx {list(weights[n].shape)}, model {list(p.shape)}"
                  for n, p in params.items() if n in weights and tuple(weights[n].shape) != tuple(p.shape)]
    unused = [n for n in weights if n not in params and not n.startswith("pooler.")]
    if missing or mismatched or unused:
        raise ValueError(f"weights do not match the model: missing {missing}, shape mismatch {mismatched}, unused {unused}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(weights[name]))


def add_lora(bert, targets, rank, alpha, dropout):
    adapted = []
    for name, module in bert.named_modules():
        if isinstance(module, PeftLinear) and name.split(".")[-1] in targets:
            module.lora = LoraLayer(module.in_features, module.out_features, rank, alpha, dropout)
            adapted.append(name)
    return adapted


def build(args):
    config, weights = import_onnx(args.onnx)
    config["hidden_dropout_prob"] = args.dropout
    config["attention_probs_dropout_prob"] = args.dropout
    torch.manual_seed(args.seed)
    model = SequenceClassifier(config, args.classes, args.dropout)
    load_weights(model.bert, weights)
    if args.mode == "lora":
        add_lora(model.bert, set(args.lora_targets.split(",")), args.lora_r, args.lora_alpha, args.lora_dropout)
        for name, p in model.named_parameters():
            p.requires_grad_(".lora." in name or name.startswith("classifier."))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return config, model


# ---------------------------------------------------------------------------------------------------------------------

def dump_hidden(args, model):
    rows = [[int(t) for t in row.split(",") if t.strip()] for row in args.ids.split(";") if row.strip()]
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    model.eval()
    with torch.no_grad():
        hidden = model.bert(ids, mask, torch.zeros_like(ids))
        pooled = SequenceClassifier.pool(hidden, mask)
    result = {
        "inputIds": ids.tolist(),
        "attentionMask": mask.tolist(),
        "shape": list(hidden.shape),
        "lastHiddenState": hidden.tolist(),
        "meanPooled": pooled.tolist(),
        "torch": torch.__version__,
    }
    with open(args.dump_hidden, "w") as f:
        json.dump(result, f)
    print(json.dumps({"dumpHidden": args.dump_hidden, "shape": list(hidden.shape),
                      "firstValues": [round(v, 6) for v in hidden[0, 0, :4].tolist()]}))


def loaded_blas():
    """The BLAS libraries mapped into this process (Linux): shows whether OpenBLAS or the reference BLAS serves torch."""
    try:
        with open("/proc/self/maps") as f:
            return sorted({line.split()[-1] for line in f if "blas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:
        return []


def benchmark(args, model):
    gen = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(1000, 30522, (args.batch, args.seq), generator=gen, dtype=torch.long)
    attention_mask = torch.ones(args.batch, args.seq, dtype=torch.long)
    token_type_ids = torch.zeros(args.batch, args.seq, dtype=torch.long)
    labels = torch.randint(0, args.classes, (args.batch,), generator=gen, dtype=torch.long)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids, attention_mask, token_type_ids)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        return loss.item()

    losses = []
    for _ in range(args.warmup):
        losses.append(step())
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        losses.append(step())
        times.append((time.perf_counter() - start) * 1000.0)

    print(json.dumps({
        "mode": args.mode,
        "batch": args.batch,
        "seq": args.seq,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "steps": args.steps,
        "stepMsMedian": round(statistics.median(times), 3) if times else None,
        "stepMsAll": [round(t, 3) for t in times],
        "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "torch": torch.__version__,
        "blas": loaded_blas(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS") if k in os.environ},
        "trainableParameters": sum(p.numel() for p in trainable),
        "totalParameters": sum(p.numel() for p in model.parameters()),
        "losses": [round(l, 5) for l in losses],
    }))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", required=True, help="the all-MiniLM-L6-v2 (or other BERT) ONNX export")
    parser.add_argument("--mode", choices=["lora", "full"], default="lora")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden, attention and head dropout")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--lora-dropout", type=float, default=0.1)
    parser.add_argument("--lora-targets", default="query,value", help="comma-separated Linear names")
    parser.add_argument("--dump-hidden", metavar="FILE",
                        help="write the eval-mode last_hidden_state of --ids as JSON and exit (no benchmark)")
    parser.add_argument("--ids", default=DEFAULT_IDS,
                        help="token ids for --dump-hidden: comma-separated, ';' between sequences (shorter ones padded "
                             "with 0 and masked); default: [CLS] this is a test . [SEP]")
    args = parser.parse_args(argv)
    if args.batch <= 0 or args.seq <= 0 or args.steps < 0 or args.warmup < 0 or args.classes < 2:
        parser.error("--batch and --seq must be positive, --steps and --warmup non-negative, --classes at least 2")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    config, model = build(args)
    if args.seq > config["max_position_embeddings"]:
        parser.error(f"--seq {args.seq} exceeds the model's {config['max_position_embeddings']} positions")
    print(f"config: {json.dumps(config)}", file=sys.stderr)
    if args.dump_hidden:
        dump_hidden(args, model)
    else:
        benchmark(args, model)


if __name__ == "__main__":
    main()
