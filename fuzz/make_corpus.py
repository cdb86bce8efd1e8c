#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora under fuzz/corpus/<target>/ (checked in).

Each corpus holds small valid inputs (valid_*: what the parser must accept, including the shipped
checkpoints' own files or their headers) and near-valid ones, each one mistake away from valid
(bad_*: what it must reject by name). Inputs that made a target fail once (regress_*, see
docs/reliability.md) are added by hand and kept when this script rewrites the rest. libFuzzer mutates from these; a few kilobytes each keep mutation
fast. Run from anywhere; needs protoc (protobuf-compiler) and spm_train (sentencepiece), both in
scripts/install-deps.sh. Regenerating rewrites every seed (the tokenizer models may differ byte
for byte between SentencePiece versions).
"""

import json
import os
import struct
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def reset(target):
    """Removes the generated seeds; inputs a fuzzing run found (regress_*) are kept."""
    folder = os.path.join(CORPUS, target)
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if not name.startswith("regress_"):
            os.remove(os.path.join(folder, name))


# ---- safetensors ----


def safetensors(header, data=b"", pad=True):
    """A file from a header (dict or raw text) and data bytes, padded as the writer pads."""
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    raw = text.encode()
    while pad and (8 + len(raw)) % 8:
        raw += b" "
    return struct.pack("<Q", len(raw)) + raw + data


def tensors(*specs, metadata=None):
    """specs: (name, dtype, shape); the data is counted bytes 0, 1, 2, ..."""
    size = {"F32": 4, "F16": 2, "BF16": 2}
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in specs:
        n = size[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    return header, bytes(i % 251 for i in range(offset))


def safetensors_corpus():
    t = "safetensors"
    reset(t)
    write(t, "valid_empty", safetensors({}))
    write(t, "valid_one_f32", safetensors(*tensors(("w", "F32", [2, 3]))))
    write(t, "valid_all_dtypes_metadata",
          safetensors(*tensors(("a.weight", "F32", [2, 2]), ("b", "F16", [3]),
                               ("c", "BF16", [1, 1, 2]), metadata={"format": "pt"})))
    write(t, "valid_zero_size_and_scalar",
          safetensors(*tensors(("empty", "F32", [0, 4]), ("scalar", "F32", []))))
    write(t, "valid_unpadded", safetensors(*tensors(("w", "F16", [2])), pad=False))
    # The shipped class model's tensor names and ranks, with every dim cut to 1.
    with open(os.path.join(ROOT, "weights", "fmnist-dart", "model.safetensors"), "rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        shipped = json.loads(f.read(length))
    specs = [(k, v["dtype"], [1] * len(v["shape"])) for k, v in sorted(shipped.items())
             if k != "__metadata__"]
    write(t, "valid_shipped_names", safetensors(*tensors(*specs)))

    header, data = tensors(("w", "F32", [2]))
    write(t, "bad_short", b"\x10\x00\x00\x00\x00\x00\x00")
    write(t, "bad_header_past_end", safetensors(header, data)[:20])
    write(t, "bad_oversized_header", struct.pack("<Q", (100 << 20) + 1) + b"{}")
    write(t, "bad_magic", safetensors("[]"))
    write(t, "bad_json", safetensors('{"w":{"dtype":"F32",'))
    write(t, "bad_dtype", safetensors({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}},
                                      bytes(8)))
    write(t, "bad_shape_negative",
          safetensors({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)))
    write(t, "bad_shape_float",
          safetensors({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, bytes(4)))
    write(t, "bad_shape_rank9",
          safetensors({"w": {"dtype": "F32", "shape": [1] * 9, "data_offsets": [0, 4]}}, bytes(4)))
    write(t, "bad_shape_huge",
          safetensors({"w": {"dtype": "F32", "shape": [2**32, 2**32],
                             "data_offsets": [0, 4]}}, bytes(4)))
    write(t, "bad_offsets_reversed",
          safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, bytes(4)))
    write(t, "bad_offsets_past_end",
          safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, bytes(4)))
    write(t, "bad_size_mismatch",
          safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(8)))
    write(t, "bad_overlap",
          safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
    write(t, "bad_missing_key", safetensors({"w": {"dtype": "F32", "shape": [1]}}, bytes(4)))
    write(t, "bad_metadata_value", safetensors({"__metadata__": {"format": 1}}))
    write(t, "bad_metadata_array", safetensors({"__metadata__": ["pt"]}))
    write(t, "bad_nested_dtype",
          safetensors({"w": {"dtype": [[["F32"]]], "shape": [1], "data_offsets": [0, 4]}},
                      bytes(4)))


# ---- config.json ----


def model_config_corpus():
    t = "model_config"
    reset(t)
    for name in ("fmnist-dart", "fmnist-dart-fm", "shapes-dart"):
        with open(os.path.join(ROOT, "weights", name, "config.json")) as f:
            write(t, "valid_shipped_" + name.replace("-", "_"), f.read())
    tiny = {"image_size": 8, "channels": 1, "patch_size": 2, "num_steps": 4, "width": 32,
            "depth": 2, "heads": 2, "num_classes": 10}
    write(t, "valid_tiny", json.dumps(tiny))
    write(t, "valid_empty_object", "{}")
    write(t, "valid_dart_ar_heun", json.dumps(dict(tiny, variant="dart_ar", head="flow",
                                                   flow_solver="heun", flow_steps=2)))
    write(t, "valid_latent_text", json.dumps(dict(
        tiny, autoencoder="autoencoder", autoencoder_downsample=4, channels=4,
        conditioning="text", text_vocab_size=300, text_max_tokens=16, text_width=32,
        text_depth=1, text_heads=2, absolute_positions=True, loss_weight="paper_sum")))
    write(t, "valid_unconditional", json.dumps(dict(tiny, conditioning="none", snr_shift=2.5,
                                                    loss_weight="uniform")))
    write(t, "bad_unknown_field", json.dumps(dict(tiny, widht=32)))
    write(t, "bad_kind", json.dumps(dict(tiny, kind="autoencoder")))
    write(t, "bad_type", json.dumps(dict(tiny, width="32")))
    write(t, "bad_enum", json.dumps(dict(tiny, head="median")))
    write(t, "bad_range", json.dumps(dict(tiny, patch_size=3)))
    write(t, "bad_int_overflow", '{"width": 18446744073709551615}')
    write(t, "bad_double_overflow", '{"rope_theta": 1e999}')
    write(t, "bad_not_object", "[1, 2]")
    write(t, "bad_json", '{"width": 32,')


# ---- GenerateImageRequest ----


def generate_request_corpus():
    t = "generate_request"
    reset(t)
    requests = {
        "valid_empty": "",
        "valid_class": 'request_id: "r-1" model: "fmnist-dart" class_id: 3 seed: 7',
        "valid_class_name": 'prompt: "ankle boot" guidance_scale: 3 num_images: 4',
        "valid_text": 'prompt: "a small red circle at the top left" temperature: 0.8 steps: 4',
        "valid_preview": ('class_id: 1 preview { every_n_steps: 2 max_side: 64 '
                          'kind: PREVIEW_KIND_DECODED } priority: PRIORITY_BATCH'),
        "valid_interactive": "priority: PRIORITY_INTERACTIVE guidance_scale: 1 temperature: 2",
        "bad_class_range": "class_id: -1",
        "bad_steps": "steps: 5",
        "bad_guidance": "guidance_scale: 21",
        "bad_temperature": "temperature: 0",
        "bad_num_images": "num_images: 17",
        "bad_preview_side": "preview { max_side: 4097 }",
        "bad_preview_kind": "preview { kind: 7 }",
        "bad_priority": "priority: 9",
        "bad_request_id": 'request_id: "a b/c"',
        "bad_long_prompt": 'prompt: "' + "\\303\\251" * 200 + '"',
    }
    proto = os.path.join(ROOT, "proto")
    for name, text in requests.items():
        data = subprocess.run(
            ["protoc", "--proto_path=" + proto, "--encode=dartserve.v1.GenerateImageRequest",
             os.path.join(proto, "dartserve", "v1", "image_generator.proto")],
            input=text.encode(), check=True, capture_output=True).stdout
        write(t, name, data)
    write(t, "bad_wire_truncated", b"\x1a\x10abc")


# ---- tokenizer.model ----


def tokenizer_corpus():
    t = "tokenizer"
    reset(t)
    shapes = ["circle", "square", "triangle", "cross", "ring", "hexagon", "star"]
    colours = ["red", "green", "blue", "cyan", "orange", "violet", "brown", "gray"]
    places = ["at the top left", "at the bottom right", "in the center", "on the left"]
    captions = [f"a {s} {c} {p}" for s in shapes for c in colours for p in places]
    special = ["--pad_id=0", "--unk_id=1", "--bos_id=2", "--eos_id=3"]
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "captions.txt")
        with open(text, "w") as f:
            f.write("\n".join(captions) + "\n")
        rules = os.path.join(tmp, "rules.tsv")
        with open(rules, "w") as f:  # a tiny normalization charsmap: A -> a, fullwidth a -> a
            f.write("41\t61\nFF41\t61\n")

        def train(name, *args):
            prefix = os.path.join(tmp, name)
            subprocess.run(["spm_train", "--input=" + text, "--model_prefix=" + prefix,
                            "--num_threads=1", "--minloglevel=2", *args],
                           check=True, capture_output=True)
            with open(prefix + ".model", "rb") as f:
                return f.read()

        common = ["--byte_fallback=true", "--character_coverage=1.0",
                  "--normalization_rule_name=identity", *special]
        bpe = train("bpe", "--model_type=bpe", "--vocab_size=300", *common)
        write(t, "valid_bpe_identity", bpe)
        write(t, "valid_unigram", train("unigram", "--model_type=unigram", "--vocab_size=290",
                                        *common))
        write(t, "valid_char", train("char", "--model_type=char", *common))
        write(t, "valid_bpe_rules", train(
            "rules", "--model_type=bpe", "--vocab_size=300", "--byte_fallback=true",
            "--normalization_rule_tsv=" + rules, *special))
        write(t, "bad_default_special_ids", train(
            "default", "--model_type=bpe", "--vocab_size=60",
            "--normalization_rule_name=identity"))
        write(t, "bad_truncated", bpe[: len(bpe) // 2])


if __name__ == "__main__":
    safetensors_corpus()
    model_config_corpus()
    generate_request_corpus()
    tokenizer_corpus()
    for target in sorted(os.listdir(CORPUS)):
        folder = os.path.join(CORPUS, target)
        files = os.listdir(folder)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        print(f"{target}: {len(files)} seeds, {size} bytes")
