#!/usr/bin/env python3
"""safetensors interoperability between cxr and Hugging Face's `safetensors` package.

    check_safetensors.py SAFETENSORS_WRITER WORKDIR

1. cxr -> Python: runs `SAFETENSORS_WRITER write WORKDIR` and loads the model file and
   the tensor file with safetensors.numpy.load_file / safe_open, checking names, dtypes,
   shapes, values (exactly) and the metadata, including the JSON held in cxr.architecture
   and cxr.class_names.
2. Python -> cxr: writes F32/F64/I64 tensors with metadata through safetensors.numpy.save_file
   and has the writer's `check` mode read them; then rewrites the cxr model file's weights
   from Python (same metadata) and has `check-model` load it with load_model.

Exits 77 (ctest's SKIP_RETURN_CODE) when numpy or safetensors is not installed.
"""
import json
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
except ImportError as e:
    print(f"SKIP: {e} (install with: python3 -m pip install safetensors numpy)")
    sys.exit(77)

NP_DTYPE = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
ST_DTYPE = {np.dtype(v): k for k, v in NP_DTYPE.items()}
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def describe(arr):
    return {"dtype": ST_DTYPE[arr.dtype], "shape": list(arr.shape), "values": arr.reshape(-1).tolist()}


def compare(where, loaded, expected):
    check(sorted(loaded) == sorted(expected), f"{where}: names {sorted(loaded)} != {sorted(expected)}")
    for name, e in expected.items():
        if name not in loaded:
            continue
        a = loaded[name]
        check(a.dtype == NP_DTYPE[e["dtype"]], f"{where}: {name} dtype {a.dtype}, expected {e['dtype']}")
        check(list(a.shape) == e["shape"], f"{where}: {name} shape {list(a.shape)}, expected {e['shape']}")
        want = np.array(e["values"], dtype=NP_DTYPE[e["dtype"]]).reshape(e["shape"])
        check(a.shape == want.shape and np.array_equal(a, want), f"{where}: {name} values differ")


def check_layout(path):
    """The header length is a multiple of 8 so the data is aligned, as the format advises."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    check(n % 8 == 0, f"{path}: header length {n} is not a multiple of 8")
    return header


def cxr_to_python(workdir):
    model_path = os.path.join(workdir, "model.safetensors")
    expected = json.load(open(model_path + ".expected.json"))
    check_layout(model_path)
    compare("model", load_file(model_path), expected["tensors"])
    with safe_open(model_path, framework="np") as f:
        meta = f.metadata()
        check(sorted(f.keys()) == sorted(expected["tensors"]), "model: safe_open keys differ")
    check(meta.get("format") == "cxr.model.v1", f"model: format {meta.get('format')!r}")
    arch = json.loads(meta["cxr.architecture"])
    check(arch == expected["architecture"], "model: cxr.architecture differs from the model's spec")
    check(arch.get("arch") == "simple_cnn" and isinstance(arch.get("layers"), list) and arch["layers"],
          "model: cxr.architecture lacks the expanded layer list")
    check(json.loads(meta["cxr.class_names"]) == expected["class_names"],
          f"model: cxr.class_names {meta['cxr.class_names']!r}")
    check(json.loads(meta["cxr.input_size"]) == [16, 16], f"model: cxr.input_size {meta['cxr.input_size']!r}")
    check(meta["cxr.in_channels"] == "1", f"model: cxr.in_channels {meta['cxr.in_channels']!r}")
    norm = json.loads(meta["cxr.normalization"])
    check(norm == {"mean": expected["mean"], "std": expected["std"]}, f"model: cxr.normalization {norm}")
    check(json.loads(meta["cxr.training"]) == expected["training"], "model: cxr.training differs")
    check(bool(meta.get("cxr.engine_version")), "model: no cxr.engine_version")
    # BatchNorm counters are scalars: () shaped int64 in numpy.
    nbt = [k for k in expected["tensors"] if k.endswith("num_batches_tracked")]
    check(nbt and all(load_file(model_path)[k].shape == () for k in nbt), "model: num_batches_tracked not 0-d")

    tensors_path = os.path.join(workdir, "tensors.safetensors")
    expected = json.load(open(tensors_path + ".expected.json"))
    check_layout(tensors_path)
    compare("tensors", load_file(tensors_path), expected["tensors"])
    with safe_open(tensors_path, framework="np") as f:
        meta = f.metadata()
    check(meta == expected["metadata"], f"tensors: metadata {meta}")
    check(json.loads(meta["nested"]) == {"a": [1, 2]}, "tensors: nested JSON metadata")


def run_writer(writer, *args):
    r = subprocess.run([writer, *args], capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    sys.stdout.write(r.stderr)
    check(r.returncode == 0, f"{' '.join(args)} exited with {r.returncode}")


def python_to_cxr(writer, workdir):
    rng = np.random.default_rng(12345)
    tensors = {
        "py.f32": rng.standard_normal((2, 3)).astype(np.float32),
        "py.f64": np.array([1.0 / (i + 1) for i in range(5)], dtype=np.float64),
        "py.i64": np.array([[-(2 ** 40), -1], [0, 2 ** 62 + 5]], dtype=np.int64),
        "py.scalar": np.array(np.pi, dtype=np.float64),
        "py.conv": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "py.empty": np.zeros((0, 3), dtype=np.float32),
    }
    meta = {"source": "python safetensors", "json": json.dumps({"k": [1, "x"]}), "unicode": "\u00e9dema"}
    path = os.path.join(workdir, "from_python.safetensors")
    save_file(tensors, path, metadata=meta)
    expected_path = path + ".expected.json"
    json.dump({"tensors": {k: describe(v) for k, v in tensors.items()}, "metadata": meta}, open(expected_path, "w"))
    run_writer(writer, "check", path, expected_path)

    # A model file whose weights were changed in Python (as when importing weights from
    # another framework) loads as a cxr model.
    src = os.path.join(workdir, "model.safetensors")
    with safe_open(src, framework="np") as f:
        meta = f.metadata()
    weights = load_file(src)
    # np.asarray keeps 0-d arrays (num_batches_tracked) arrays rather than numpy scalars.
    changed = {k: np.asarray(v + 1 if v.dtype == np.int64 else v * -0.5, dtype=v.dtype) for k, v in weights.items()}
    path = os.path.join(workdir, "model_from_python.safetensors")
    save_file(changed, path, metadata=meta)
    expected_path = path + ".expected.json"
    json.dump({"tensors": {k: describe(v) for k, v in changed.items()},
               "class_names": json.loads(meta["cxr.class_names"])}, open(expected_path, "w"))
    run_writer(writer, "check-model", path, expected_path)


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    writer, workdir = sys.argv[1], sys.argv[2]
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    run_writer(writer, "write", workdir)
    if not failures:
        cxr_to_python(workdir)
        python_to_cxr(writer, workdir)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    import safetensors
    print(f"OK: cxr <-> safetensors {safetensors.__version__} (numpy {np.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
