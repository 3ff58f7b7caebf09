"""Models and checkpoints load only from safetensors or from DeepSpeed checkpoints mixtune wrote and
hashed, never from an arbitrary pickle (unpickling runs whatever code the pickle names).

- Static: an AST walk of components/ and pipelines/ finds no pickle-family import, no torch.load
  without weights_only=True, no model from_pretrained without use_safetensors=True, no
  np.load(allow_pickle=True), no trust_remote_code=True, no DeepSpeed load_checkpoint outside the
  verifying checkpoint.restore. The checker is shown to catch each bad call on a small source string.
- Behaviour: a model directory holding only a pickle (pytorch_model.bin whose unpickling would create
  a marker file) is refused by every real load path, by name, and the marker never appears.
- Checkpoints: the _COMPLETE marker lists the sha256 of every file; restore refuses an altered,
  extra or missing file, and a marker without sha256s, before DeepSpeed's load_checkpoint is called.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from components.common import hf, weights
from components.common.config import TinyModelConfig
from components.common.storage import COMPLETE_MARKER, Store, join
from components.train import checkpoint
from components.train import model as model_lib

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("components", "pipelines")

# -- the static checker ------------------------------------------------------------------------------

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}
# from_pretrained on these reads JSON/text (configs, tokenizers, processors), never weights.
NOT_A_MODEL = re.compile(r"(Tokenizer|Config|Processor|FeatureExtractor)\w*$")
# The one place DeepSpeed may load a checkpoint: after checking every file's sha256 against the marker.
LOAD_CHECKPOINT_ALLOWED = {"components/train/checkpoint.py"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin, from every import in the module (np -> numpy, load -> torch.load)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else node.attr
    if isinstance(node, ast.Call):  # AutoConfig.from_pretrained(p).x: name the call's target
        return _dotted(node.func, aliases)
    return None


def _kw(call: ast.Call, name: str):
    """(present, constant value or ... when not a constant); a **kwargs hides it, so counts as unknown."""
    for k in call.keywords:
        if k.arg == name:
            return True, k.value.value if isinstance(k.value, ast.Constant) else ...
    return (True, ...) if any(k.arg is None for k in call.keywords) else (False, None)


def unsafe_loads(source: str, filename: str = "<string>") -> list[str]:
    """Every call or import in source that could unpickle (or run) untrusted bytes, as 'file:line: why'."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []

    def bad(node: ast.AST, why: str) -> None:
        found.append(f"{filename}:{node.lineno}: {why}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PICKLE_MODULES:
                    bad(node, f"imports {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PICKLE_MODULES:
            bad(node, f"imports from {node.module}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases) or ""
        if name in ("torch.load", "torch.serialization.load"):
            present, value = _kw(node, "weights_only")
            if value is not True:
                bad(node, "torch.load without weights_only=True unpickles arbitrary objects")
        elif name in ("numpy.load", "np.load"):
            present, value = _kw(node, "allow_pickle")
            if present and value is not False:
                bad(node, "np.load with allow_pickle")
        elif name.endswith("read_pickle") or name in ("yaml.unsafe_load", "yaml.full_load"):
            bad(node, f"{name} unpickles / constructs arbitrary objects")
        elif name == "yaml.load":
            loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
            if loader is None or _dotted(loader, aliases) not in ("yaml.SafeLoader", "yaml.CSafeLoader"):
                bad(node, "yaml.load without Loader=yaml.SafeLoader")
        if isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
            target = _dotted(node.func.value, aliases) or ""
            if "Peft" in target:
                bad(node, f"{target}.from_pretrained falls back to a pickled adapter_model.bin: load the "
                          "adapter's safetensors with safetensors.torch.load_file")
            elif not NOT_A_MODEL.search(target.rsplit(".", 1)[-1]):
                present, value = _kw(node, "use_safetensors")
                if value is not True:
                    bad(node, f"{target or '?'}.from_pretrained of a model without use_safetensors=True "
                              "(would fall back to a pickled pytorch_model.bin)")
        if isinstance(node.func, ast.Attribute) and node.func.attr == "load_checkpoint" \
                and filename not in LOAD_CHECKPOINT_ALLOWED:
            bad(node, "DeepSpeed load_checkpoint unpickles: go through components.train.checkpoint.restore, "
                      "which verifies every file's sha256 first")
        if any(k.arg == "trust_remote_code" for k in node.keywords) and _kw(node, "trust_remote_code")[1] is not False:
            bad(node, "trust_remote_code runs code shipped with the model")
    return found


def product_sources() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py"))


def test_no_unsafe_load_in_components_or_pipelines(record):
    sources = product_sources()
    assert len(sources) > 50, "the walk found too few files: wrong root?"
    found = [f for p in sources for f in unsafe_loads(p.read_text(), p.relative_to(REPO).as_posix())]
    record("static scan: pickle/torch.load/from_pretrained/np.load in components+pipelines",
           "no unsafe load", f"{len(sources)} files, {len(found)} unsafe" + (f": {found[:3]}" if found else ""),
           not found)


BAD = {
    "import pickle": "import pickle\npickle.loads(b'')",
    "import joblib as jl": "import joblib as jl",
    "from dill import loads": "from dill import loads",
    "torch.load, no weights_only": "import torch\ntorch.load('x.pt')",
    "torch.load, weights_only=False": "import torch\ntorch.load('x.pt', weights_only=False)",
    "from torch import load": "from torch import load\nload('x.pt', map_location='cpu')",
    "model from_pretrained, no use_safetensors": "from transformers import AutoModel\nAutoModel.from_pretrained(p)",
    "model from_pretrained, use_safetensors=False":
        "import transformers as t\nt.T5ForConditionalGeneration.from_pretrained(p, use_safetensors=False)",
    "from_pretrained via a variable": "auto = pick()\nauto.from_pretrained(p, dtype=x)",
    "from_pretrained with **kwargs": "from transformers import AutoModel\nAutoModel.from_pretrained(p, **kw)",
    "PeftModel.from_pretrained": "from peft import PeftModel\nPeftModel.from_pretrained(base, d)",
    "np.load(allow_pickle=True)": "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
    "pandas read_pickle": "import pandas as pd\npd.read_pickle('a.pkl')",
    "yaml.load, no SafeLoader": "import yaml\nyaml.load(s)",
    "yaml.unsafe_load": "import yaml\nyaml.unsafe_load(s)",
    "trust_remote_code=True":
        "from transformers import AutoTokenizer\nAutoTokenizer.from_pretrained(p, trust_remote_code=True)",
    "load_checkpoint outside checkpoint.py": "engine.load_checkpoint(d, tag=t)",
}
GOOD = [
    "import torch\ntorch.load('x.pt', weights_only=True)",
    "from transformers import AutoModelForSeq2SeqLM\nAutoModelForSeq2SeqLM.from_pretrained(p, use_safetensors=True)",
    "from transformers import AutoTokenizer, AutoConfig\nAutoTokenizer.from_pretrained(p)\n"
    "AutoConfig.from_pretrained(p).is_encoder_decoder",
    "import numpy as np\nnp.load('a.npy')\nnp.load('b.npy', allow_pickle=False)",
    "import yaml\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)",
    "from safetensors.torch import load_file\nload_file('m.safetensors')",
]


@pytest.mark.parametrize("label", sorted(BAD))
def test_checker_catches_a_bad_call(label):
    assert unsafe_loads(BAD[label], "components/x.py"), f"the checker missed: {label}"


def test_checker_catches_bad_calls_and_passes_safe_ones(record):
    missed = [label for label, src in BAD.items() if not unsafe_loads(src, "components/x.py")]
    false = [src for src in GOOD if unsafe_loads(src, "components/x.py")]
    allowed = unsafe_loads(BAD["load_checkpoint outside checkpoint.py"], "components/train/checkpoint.py")
    record("static checker on bad source strings", f"all {len(BAD)} kinds flagged, safe calls pass",
           f"{len(BAD) - len(missed)}/{len(BAD)} flagged, {len(false)} false alarms"
           + (f", missed {missed}" if missed else ""),
           not missed and not false and not allowed)


# -- model directories holding a pickle --------------------------------------------------------------

class _Bomb:
    """Unpickling this opens (so creates) the marker file: what any code in a hostile pickle could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


TINY = TinyModelConfig(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1, num_decoder_layers=1,
                       vocab_size=300)


def _tiny_model():
    return model_lib.build_tiny(TINY, vocab_size=300, pad_id=0, eos_id=1, seed=0)


def pickle_only_dir(directory: Path, marker: Path, safetensors_too: bool = False) -> Path:
    """A save_pretrained-looking model dir: config.json and a real torch.save of the tiny model's
    state_dict as pytorch_model.bin, with a bomb inside the pickle (and model.safetensors if asked)."""
    model = _tiny_model()
    directory.mkdir(parents=True, exist_ok=True)
    if safetensors_too:
        model.save_pretrained(directory)
    else:
        model.config.save_pretrained(directory)
    state = dict(model.state_dict())
    state["__mixtune_bomb__"] = _Bomb(marker)
    torch.save(state, directory / "pytorch_model.bin")
    return directory


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXTUNE_CACHE", str(tmp_path / "cache"))


def test_model_dir_with_only_a_pickle_is_refused_and_never_unpickled(tmp_path, store, isolated_cache, record):
    marker = tmp_path / "UNPICKLED"
    local = pickle_only_dir(tmp_path / "model", marker)
    uri = join(store.root, "hostile", "model")
    store.upload_dir(local, uri)
    store.put_json(join(uri, COMPLETE_MARKER), {})

    loads = {  # every load path: evaluate and infer (hf.load_model, local dir or S3), train (model.load_model)
        "hf.load_model(local dir)": lambda: hf.load_model(str(local), store),
        "hf.load_model(s3 prefix)": lambda: hf.load_model(uri, store),
        "train model.load_model(seq2seq)": lambda: model_lib.load_model(str(local), "seq2seq"),
        "train model.load_model(causal)": lambda: model_lib.load_model(str(local), "causal"),
    }
    for label, load in loads.items():
        with pytest.raises(ValueError) as e:
            load()
        msg = str(e.value)
        where = "S3 prefix" if "s3" in label else "dir"
        named = (uri in msg) if "s3" in label else (str(local) in msg)
        record(f"model dir with only a pickle (.bin): {label}", "refused naming the dir, never unpickled",
               f"ValueError {'naming the ' + where if named else 'NOT naming the ' + where}, "
               f"{'lists' if 'pytorch_model.bin' in msg else 'omits'} pytorch_model.bin; "
               f"marker {'PRESENT' if marker.exists() else 'absent'}",
               named and "pytorch_model.bin" in msg and not marker.exists())

    # Defence in depth: without the directory check, from_pretrained(use_safetensors=True) still refuses.
    from transformers import AutoModelForSeq2SeqLM

    with pytest.raises(OSError, match="safetensors"):
        AutoModelForSeq2SeqLM.from_pretrained(str(local), use_safetensors=True)
    record("pickle-only dir straight to from_pretrained(use_safetensors=True)", "refused, never unpickled",
           f"OSError; marker {'PRESENT' if marker.exists() else 'absent'}", not marker.exists())

    # The bomb is live: had anything unpickled the .bin, the marker would exist.
    torch.load(local / "pytorch_model.bin", weights_only=False)
    assert marker.exists(), "the test's pickle does not create its marker: the assertions above prove nothing"


def test_safetensors_beside_a_pickle_loads_the_safetensors_only(tmp_path, store, isolated_cache, record):
    marker = tmp_path / "UNPICKLED"
    local = pickle_only_dir(tmp_path / "model", marker, safetensors_too=True)
    reference = _tiny_model().state_dict()
    for label, load in {"hf.load_model": lambda: hf.load_model(str(local), store),
                        "train model.load_model": lambda: model_lib.load_model(str(local), "seq2seq")}.items():
        loaded = load().state_dict()
        same = all(torch.equal(loaded[k], reference[k]) for k in reference)
        record(f"model dir with safetensors and a pickle beside it: {label}", "safetensors loaded, pickle untouched",
               f"weights {'equal' if same else 'DIFFER'}; marker {'PRESENT' if marker.exists() else 'absent'}",
               same and not marker.exists())


def test_require_safetensors_accepts_hub_ids_and_sharded_dirs(tmp_path):
    weights.require_safetensors("google-t5/t5-small")  # not a directory: from_pretrained(use_safetensors=True) decides
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    weights.require_safetensors(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="found no weights at all"):
        weights.require_safetensors(str(empty))


# -- DeepSpeed checkpoints ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_process_group(tmp_path_factory):
    """A real (gloo, world size 1) process group: save and restore run their collectives as in training."""
    if dist.is_initialized():
        yield
        return
    rendezvous = tmp_path_factory.mktemp("pg") / "rendezvous"
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


FILES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt")


class FakeEngine:
    """DeepSpeed's checkpoint calls, writing and reading plain files: what matters here is which bytes
    reach load_checkpoint, and whether it is called at all."""

    def __init__(self, step: int = 0):
        self.global_steps = step
        self.loads: list[str] = []

    def save_checkpoint(self, save_dir, tag, client_state, exclude_frozen_parameters=False):
        d = Path(save_dir) / tag
        d.mkdir(parents=True, exist_ok=True)
        (d / FILES[0]).write_text(json.dumps({"step": self.global_steps, "client_state": client_state}))
        (d / FILES[1]).write_bytes(bytes(range(256)) * 64)
        (Path(save_dir) / "latest").write_text(tag)  # as DeepSpeed does: outside the tag, not uploaded

    def load_checkpoint(self, load_dir, tag, **_):
        self.loads.append(tag)
        saved = json.loads((Path(load_dir) / tag / FILES[0]).read_text())
        self.global_steps = saved["step"]
        return str(Path(load_dir) / tag), saved["client_state"]


def _saved(store: Store, tmp: Path, step: int = 4) -> str:
    root = join(store.root, "ckpt")
    checkpoint.save(FakeEngine(step), store, root, step, {"mixtune": {"history": [1]}}, tmp / "save", keep=2,
                    local_rank=0)
    return root


def _restore(store: Store, root: str, tmp: Path) -> tuple[FakeEngine, object]:
    engine = FakeEngine()
    try:
        return engine, checkpoint.restore(engine, store, root, tmp / "restore", local_rank=0)
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return engine, e


def test_checkpoint_marker_lists_every_file_and_round_trips(one_process_group, store, tmp_path, record):
    root = _saved(store, tmp_path)
    ckpt = join(root, checkpoint.tag_for(4))
    marker = store.get_json(join(ckpt, COMPLETE_MARKER))
    engine, state = _restore(store, root, tmp_path)
    ok = (sorted(marker["sha256"]) == sorted(FILES) and all(len(d) == 64 for d in marker["sha256"].values())
          and state == {"mixtune": {"history": [1]}} and engine.loads == [checkpoint.tag_for(4)])
    record("checkpoint saved then resumed", "marker lists every file's sha256; loads",
           f"{len(marker['sha256'])} files hashed; restored {state!r:.40}", ok)
    assert not (tmp_path / "restore" / checkpoint.tag_for(4)).exists()  # cleaned up after loading


def _tamper(kind: str, store: Store, ckpt: str) -> str:
    """Change the checkpoint in S3 after its marker was written; the key the error must name."""
    if kind == "altered":
        key = join(ckpt, FILES[0])
        store.put_bytes(key, store.get_bytes(key).replace(b'"history": [1]', b'"history": [9]'))
    elif kind == "extra":
        key = join(ckpt, "evil.pt")
        store.put_bytes(key, b"\x80\x04not a checkpoint file")
    elif kind == "missing":
        key = join(ckpt, FILES[1])
        store.delete(key)
    elif kind == "no sha256":
        key = join(ckpt, COMPLETE_MARKER)
        marker = store.get_json(key)
        del marker["sha256"]
        store.put_json(key, marker)
    return key


@pytest.mark.parametrize("kind, fault", [
    ("altered", "checkpoint file altered after save"),
    ("extra", "checkpoint with a file the marker does not list"),
    ("missing", "checkpoint with a listed file missing"),
    ("no sha256", "checkpoint marker without sha256s (older mixtune)"),
])
def test_tampered_checkpoint_is_refused_before_load(kind, fault, one_process_group, store, tmp_path, record):
    root = _saved(store, tmp_path)
    key = _tamper(kind, store, join(root, checkpoint.tag_for(4)))
    engine, error = _restore(store, root, tmp_path)
    msg = str(error)
    expected = "refused before load" + (", says set train.resume: false" if kind == "no sha256" else ", names the key")
    ok = (isinstance(error, ValueError) and key in msg and not engine.loads
          and not (tmp_path / "restore" / checkpoint.tag_for(4)).exists()
          and (kind != "no sha256" or "train.resume: false" in msg))
    record(fault, expected, f"{type(error).__name__} {'naming' if key in msg else 'NOT naming'} "
           f"{key.rsplit('/', 1)[-1]}; load_checkpoint {'CALLED' if engine.loads else 'not called'}", ok)


def test_leftover_local_file_does_not_pass_for_the_download(one_process_group, store, tmp_path, record):
    """A stale file in the local checkpoint dir (a crash between download and load) is cleared, not loaded."""
    root = _saved(store, tmp_path)
    stale = tmp_path / "restore" / checkpoint.tag_for(4) / "stale.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    engine, state = _restore(store, root, tmp_path)
    record("stale local file beside a downloaded checkpoint", "cleared before download; loads",
           f"restored {state!r:.40}", state == {"mixtune": {"history": [1]}} and engine.loads)


def test_verify_files_on_a_fake_checkpoint_directory(store, tmp_path):
    """The verification alone, on a directory uploaded to S3 (no process group)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.pt").write_bytes(b"a")
    (src / "sub" / "b.pt").write_bytes(b"b")
    digests = checkpoint.file_digests(src)
    assert sorted(digests) == ["a.pt", "sub/b.pt"]
    uri = join(store.root, "fake-ckpt")
    store.upload_dir(src, uri)
    store.put_json(join(uri, COMPLETE_MARKER), {"sha256": digests})
    got = checkpoint.fetch_verified(store, uri, tmp_path / "dl", checkpoint.expected_digests({"sha256": digests}, uri))
    assert (got / "sub" / "b.pt").read_bytes() == b"b"
    store.put_bytes(join(uri, "sub", "b.pt"), b"B")
    with pytest.raises(ValueError, match=re.escape(join(uri, "sub", "b.pt"))):
        checkpoint.fetch_verified(store, uri, tmp_path / "dl", digests)
    assert not (tmp_path / "dl").exists()
    with pytest.raises(RuntimeError, match="different contents"):
        checkpoint.merge_digests([{"x": "1"}, {"x": "2"}], uri)
    shutil.rmtree(src)
