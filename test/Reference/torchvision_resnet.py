#!/usr/bin/python3
"""Reference outputs of torchvision's ResNet for checking a C# ResNet backbone: plain torch + torchvision, no
pretrained weights, no safetensors package.

    torchvision_resnet.py OUT_DIR [--arch resnet18|resnet34|resnet50] [--classes N] [--seed S]
        [--no-num-batches-tracked] [--check]

Builds torchvision.models.<arch>(weights=None, num_classes=N) with torch.manual_seed(S), then gives every BatchNorm2d
non-trivial eval-mode statistics, so that eval-mode batch norm is tested rather than the identity:
  1. weight ~ U(0.5, 1.5), bias ~ N(0, 0.1^2) (torchvision initialises them to 1 and 0);
  2. running_mean / running_var estimated in train mode (momentum=None: a plain average) from 4 batches of random
     2x3x64x64 inputs, so that activations keep a sane scale through the depth of the network;
  3. then running_mean += N(0, 0.1^2) * std and running_var *= U(0.7, 1.3), so they are not the batch statistics of
     any input below either.
The model is then put in eval() mode, and OUT_DIR receives:

  model.safetensors  the full state_dict under torchvision's names (conv1.weight, bn1.running_var,
                     layer1.0.conv1.weight, layer4.0.downsample.1.weight, fc.weight, ...): every float tensor as F32;
                     each bn's num_batches_tracked (a 0-d integer, not used in eval mode) as I64 with shape [] like
                     torchvision's own state_dict, or left out with --no-num-batches-tracked.
                     Format: 8-byte little-endian header length N, N bytes of JSON
                     {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}} (keys sorted,
                     offsets relative to the end of the header), then the raw little-endian data.
  input_K.bin        batch K, float32 little-endian, NCHW, values ~ N(0, 1) (an already normalised image)
  features_K.bin     avgpool's output for batch K flattened: N x 512 (resnet18/34) or N x 2048 (resnet50), float32
  logits_K.bin       fc's output for batch K: N x classes, float32
  expected.json      {"arch", "classes", "seed", "featureDimension", "numBatchesTracked": "I64"|"omitted",
                      "tensorCount", "batches": [{"input", "inputShape", "features", "featuresShape", "logits",
                      "logitsShape"}, ...]}; file names relative to OUT_DIR

Batches (fixed, generated with their own seeded generator): 2x3x64x64, 1x3x224x224, 1x3x97x75 (odd, non-square).
--check reads model.safetensors back with this file's own reader into a freshly built model (strict) and checks that
it gives the same features and logits bit for bit, and that features @ fc.weight^T + fc.bias equals the logits.
Prints one line per file written.
"""

import argparse
import json
import os
import struct
import sys

import torch
import torchvision

ARCHES = ("resnet18", "resnet34", "resnet50")
BATCH_SHAPES = ((2, 3, 64, 64), (1, 3, 224, 224), (1, 3, 97, 75))
DTYPES = {torch.float32: ("F32", "<f4"), torch.int64: ("I64", "<i8")}
TORCH_DTYPES = {"F32": (torch.float32, 4), "I64": (torch.int64, 8)}


# ------------------------------------------------------------------ safetensors (the format's few rules)

def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> tensor (F32 or I64). Keys sorted; data laid out in that order, contiguous, little-endian."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} is not written (only float32 and int64)")
        code, numpy_type = DTYPES[t.dtype]
        data = t.numpy().astype(numpy_type, copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad the header with spaces so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)


def read_safetensors(path):
    """The inverse of write_safetensors, checking offsets cover the data exactly once, in order."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    tensors, end = {}, 0
    for name, entry in sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
        dtype, size = TORCH_DTYPES[entry["dtype"]]
        begin, stop = entry["data_offsets"]
        count = 1
        for d in entry["shape"]:
            count *= d
        if begin != end or stop - begin != count * size:
            raise ValueError(f"{path}: {name} has data_offsets {entry['data_offsets']}, expected [{end}, {end + count * size}]")
        tensors[name] = torch.frombuffer(bytearray(data[begin:stop]), dtype=dtype).reshape(entry["shape"]) if count else torch.zeros(entry["shape"], dtype=dtype)
        end = stop
    if end != len(data):
        raise ValueError(f"{path}: {len(data) - end} bytes after the last tensor")
    return tensors


def write_f32(path, tensor):
    with open(path, "wb") as f:
        f.write(tensor.detach().cpu().contiguous().to(torch.float32).numpy().astype("<f4", copy=False).tobytes())


# ------------------------------------------------------------------ model and data

def build(arch, classes, seed):
    """torchvision's architecture with seeded random weights and randomised batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=classes)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(4):
            model(torch.randn(2, 3, 64, 64))
        for bn in norms:
            bn.running_mean.add_(torch.randn_like(bn.running_mean) * 0.1 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.7, 1.3))
            bn.momentum = 0.1
    return model.eval()


def inputs(seed):
    generator = torch.Generator().manual_seed(seed + 1000)
    return [torch.randn(shape, generator=generator) for shape in BATCH_SHAPES]


def forward(model, x):
    """(avgpool's output flattened, fc's output), as torchvision's ResNet.forward computes them."""
    captured = {}
    handle = model.avgpool.register_forward_hook(lambda _m, _i, out: captured.__setitem__("features", torch.flatten(out, 1)))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return captured["features"], logits


# ------------------------------------------------------------------ main

def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--arch", choices=ARCHES, default="resnet18")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-num-batches-tracked", action="store_true", help="leave each bn's num_batches_tracked out")
    parser.add_argument("--check", action="store_true", help="read the files back and check them")
    args = parser.parse_args(argv)
    if args.classes < 1:
        parser.error("--classes must be at least 1")

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    os.makedirs(args.out_dir, exist_ok=True)
    model = build(args.arch, args.classes, args.seed)
    state = model.state_dict()
    if args.no_num_batches_tracked:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    model_path = os.path.join(args.out_dir, "model.safetensors")
    write_safetensors(model_path, state, {"format": "pt", "arch": args.arch, "classes": args.classes, "seed": args.seed})
    print(model_path)

    batches = []
    for k, x in enumerate(inputs(args.seed)):
        features, logits = forward(model, x)
        names = {"input": f"input_{k}.bin", "features": f"features_{k}.bin", "logits": f"logits_{k}.bin"}
        for key, tensor in (("input", x), ("features", features), ("logits", logits)):
            write_f32(os.path.join(args.out_dir, names[key]), tensor)
            print(os.path.join(args.out_dir, names[key]))
        batches.append({"input": names["input"], "inputShape": list(x.shape),
                        "features": names["features"], "featuresShape": list(features.shape),
                        "logits": names["logits"], "logitsShape": list(logits.shape)})

    expected = {"arch": args.arch, "classes": args.classes, "seed": args.seed,
                "featureDimension": model.fc.in_features,
                "numBatchesTracked": "omitted" if args.no_num_batches_tracked else "I64",
                "tensorCount": len(state), "torch": torch.__version__, "torchvision": torchvision.__version__,
                "batches": batches}
    with open(os.path.join(args.out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")
    print(os.path.join(args.out_dir, "expected.json"))

    if args.check:
        check(args, expected)
    return 0


def check(args, expected):
    """Reload everything from OUT_DIR alone and compare with a freshly built model."""
    loaded = read_safetensors(os.path.join(args.out_dir, "model.safetensors"))
    fresh = getattr(torchvision.models, args.arch)(weights=None, num_classes=args.classes)
    fresh.load_state_dict(loaded, strict=not args.no_num_batches_tracked)
    fresh.eval()
    for name, value in fresh.state_dict().items():
        if name.endswith("running_var") and torch.allclose(value, torch.ones_like(value)):
            raise AssertionError(f"{name} is all ones: batch norm would be the identity")
    for batch in expected["batches"]:
        def read(key):
            with open(os.path.join(args.out_dir, batch[key]), "rb") as f:
                return torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(batch[key + "Shape"])
        x, features, logits = read("input"), read("features"), read("logits")
        f2, l2 = forward(fresh, x)
        if not torch.equal(f2, features) or not torch.equal(l2, logits):
            raise AssertionError(f"{batch['input']}: the reloaded model gives other outputs "
                                 f"(features {(f2 - features).abs().max():.3g}, logits {(l2 - logits).abs().max():.3g})")
        head = features @ loaded["fc.weight"].T + loaded["fc.bias"]
        if not torch.allclose(head, logits, rtol=1e-5, atol=1e-5):
            raise AssertionError(f"{batch['logits']}: features @ fc.weight^T + fc.bias differs by {(head - logits).abs().max():.3g}")
        print(f"check {batch['input']} {batch['inputShape']}: reloaded outputs identical; features mean {features.mean():.4f} "
              f"std {features.std():.4f}; logits std {logits.std():.4f}")
    print("check passed")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
