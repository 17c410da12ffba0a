"""A study: a grid of training runs (methods x model sizes x learning rates x seeds).

A spec (YAML) names the grid; `plan_study` turns it into one `RunConfig` per run, each
with its own folder `DIR/runs/<method>_<size>_lr<lr>_s<seed>`. `run_study` trains the grid
with a pool of local worker processes (`python -m beyondbp train`, one per run), and is
resumable: completed runs are skipped, interrupted ones resume from their checkpoints.

Spec keys (every one overridable as dotted KEY=VALUE):
  name, description    labels for the report
  track                transformer (default) or mlp: the fully-connected track (`beyondbp mlp`),
                       sizes then set model.depth/width/activation, the budget is
                       base.train.epochs (no tokens key), and one "token" is one example
  methods              training methods, e.g. [bp, dfa_block, shallow]
  sizes                named sizes (beyondbp.model.NAMED_SIZES) or mappings of model keys,
                       as a list ([cpu-20k, {name: tiny, n_layer: 2, d_model: 16, n_head: 2}])
                       or a mapping name -> named size / model keys
  tokens               training tokens per run (fixed, as in the paper), or
  tokens_per_param     tokens = ratio x non-embedding parameters (Kaplan's N); transformer only
  lrs                  learning rates swept per method ({bp: [1e-3, 3e-3]}); the best per size
                       is kept for the frontier. A method without an entry uses base.train.lr
  seeds                list of seeds
  per_method           RunConfig keys for one method only ({dfa: {train.alignment_every: 4}})
  base                 RunConfig keys shared by every run (data, model.context, train schedule,
                       evaluation schedule: train.n_evals, train.eval_tokens)
  slurm                how `--executor slurm` submits runs (beyondbp.slurm): partition, account,
                       gpus_per_run, nodes, cpus_per_task, mem_gb, timeout_min, setup, extra,
                       cluster (slurm | local), prepare_data; may change between invocations
"""
from __future__ import annotations

import copy
import dataclasses
import ctypes
import fcntl
import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from .config import (ConfigError, ModelConfig, RunConfig, _coerce, apply_mapping, load_yaml,
                     parse_overrides, to_dict)

SPEC_KEYS = ("name", "description", "track", "methods", "sizes", "tokens", "tokens_per_param", "lrs", "seeds",
             "per_method", "base", "slurm")
# execution settings that may change between invocations on one study folder
EXECUTION_KEYS = ("threads", "progress", "checkpoint_every_s")
FINISHED = ("completed", "diverged")
TRACKS = ("transformer", "mlp")


# --- spec: load, override, normalise ------------------------------------------------------

def preset_names() -> list[str]:
    folder = resources.files("beyondbp") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    if name not in preset_names():
        raise ConfigError(f"--preset: unknown preset {name!r} (valid: {', '.join(preset_names())})")
    text = (resources.files("beyondbp") / "presets" / f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def set_dotted(spec: dict, key: str, value) -> None:
    """spec['a']['b'] = value for key 'a.b'; top-level keys must be spec keys."""
    parts = key.split(".")
    if parts[0] not in SPEC_KEYS:
        raise ConfigError(f"unknown key {key!r} (valid spec keys: {', '.join(SPEC_KEYS)})")
    node = spec
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value
    # the token budget is one of two forms: setting one drops the other
    if key == "tokens" and value is not None:
        spec["tokens_per_param"] = None
    if key == "tokens_per_param" and value is not None:
        spec["tokens"] = None


def load_spec(spec_file: str | Path | None = None, preset: str | None = None,
              overrides: list[str] | dict | None = None) -> dict:
    """The normalised spec from a file or preset plus dotted overrides; raises ConfigError."""
    if (spec_file is None) == (preset is None):
        raise ConfigError("study: give exactly one of SPEC (a YAML file) or --preset NAME")
    raw = load_preset(preset) if preset is not None else load_yaml(spec_file)
    raw = copy.deepcopy(raw)
    mapping = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    for key, value in mapping.items():
        set_dotted(raw, key, value)
    return normalise_spec(raw)


def _expand_dotted(mapping: dict, where: str) -> dict:
    """{'train.lr': 1} -> {'train': {'lr': 1}} (nested), validated against RunConfig."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of RunConfig keys, got {mapping!r}")
    apply_mapping(RunConfig(), mapping, prefix=f"{where}.")  # raises on unknown keys / bad values
    nested: dict = {}
    for key, value in mapping.items():
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return nested


def _base_config(track: str) -> RunConfig:
    """The RunConfig defaults a track's runs start from."""
    if track == "mlp":
        from .mlp_train import mlp_base_config
        return mlp_base_config()
    return RunConfig()


def _normalise_sizes(sizes, track: str = "transformer") -> dict[str, dict]:
    from .model import NAMED_SIZES
    if isinstance(sizes, dict):
        items = list(sizes.items())
    elif isinstance(sizes, list):
        items = []
        for entry in sizes:
            if isinstance(entry, str):
                items.append((entry, entry))
            elif isinstance(entry, dict):
                entry = dict(entry)
                name = entry.pop("name", None) or (f"D{entry.get('depth', 3)}w{entry.get('width', 256)}"
                                                   if track == "mlp" else
                                                   f"L{entry.get('n_layer', '?')}d{entry.get('d_model', '?')}")
                items.append((str(name), entry))
            else:
                raise ConfigError(f"sizes: expected a named size or a mapping of model keys, got {entry!r}")
    else:
        raise ConfigError(f"sizes: expected a list or mapping of model sizes, got {sizes!r}")
    if not items:
        raise ConfigError("sizes: must list at least one model size")
    out: dict[str, dict] = {}
    for name, value in items:
        name = str(name)
        if name in out:
            raise ConfigError(f"sizes: size {name!r} is listed twice")
        if "_" in name or "/" in name:
            raise ConfigError(f"sizes: size name {name!r} must not contain '_' or '/' (it names run folders)")
        if isinstance(value, str):
            if track == "mlp":
                raise ConfigError(f"sizes.{name}: an MLP size is a mapping of model keys "
                                  f"(depth, width, activation), got {value!r}")
            if value not in NAMED_SIZES:
                raise ConfigError(f"sizes: unknown size {value!r} (valid: {', '.join(NAMED_SIZES)})")
            value = {"size": value}
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"sizes.{name}: expected a named size or a mapping of model keys, got {value!r}")
        apply_mapping(ModelConfig(), value, prefix=f"sizes.{name}.")
        out[name] = dict(value)
    return out


def _positive(value, typ, key: str):
    if value is None:
        return None
    value = _coerce(value, typ, key)
    if value <= 0:
        raise ConfigError(f"{key}: must be positive, got {value}")
    return value


def _float_list(value, key: str) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{key}: must list at least one learning rate")
    out = [_positive(v, float, key) for v in values]
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}: learning rates are listed twice: {out}")
    return out


def normalise_spec(raw: dict) -> dict:
    """Validate every field and return the spec in one canonical form (what spec.yaml holds)."""
    from .methods import available
    if not isinstance(raw, dict):
        raise ConfigError("spec: expected a mapping at top level")
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (valid spec keys: {', '.join(SPEC_KEYS)})")

    track = str(raw.get("track") or "transformer")
    if track not in TRACKS:
        raise ConfigError(f"track: unknown track {track!r} (valid: {', '.join(TRACKS)})")
    methods = raw.get("methods")
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list) or not methods:
        raise ConfigError("methods: must list at least one training method")
    valid = available()
    kind = "mlp" if track == "mlp" else "gpt"
    for m in methods:
        if m not in valid:
            raise ConfigError(f"methods: unknown method {m!r} (valid: {', '.join(valid)})")
        if kind not in valid[m].supports:
            raise ConfigError(f"methods: {m!r} cannot train the {track} track "
                              f"(methods for it: {', '.join(n for n, c in valid.items() if kind in c.supports)})")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods: a method is listed twice: {methods}")

    tokens = _positive(raw.get("tokens"), int, "tokens")
    ratio = _positive(raw.get("tokens_per_param"), float, "tokens_per_param")
    if track == "mlp":
        if tokens is not None or ratio is not None:
            raise ConfigError(f"{'tokens' if tokens is not None else 'tokens_per_param'}: the mlp track's "
                              f"budget is base.train.epochs; leave tokens out")
    elif (tokens is None) == (ratio is None):
        raise ConfigError("tokens: give exactly one of tokens (per run) or tokens_per_param")

    seeds = raw.get("seeds", [0])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds:
        raise ConfigError("seeds: must list at least one seed")
    seeds = [_coerce(s, int, "seeds") for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: a seed is listed twice: {seeds}")

    base_cfg = apply_mapping(_base_config(track), raw.get("base") or {}, prefix="base.")
    base = to_dict(base_cfg)
    base.pop("method")  # a run's method comes from `methods`, its seed from `seeds`
    base.pop("seed")

    lrs_raw = raw.get("lrs") or {}
    if not isinstance(lrs_raw, dict):
        raise ConfigError(f"lrs: expected a mapping method -> learning rates, got {lrs_raw!r}")
    for m in list(lrs_raw) + list(raw.get("per_method") or {}):
        if m not in valid:
            raise ConfigError(f"lrs.{m}: unknown method {m!r} (valid: {', '.join(valid)})"
                              if m in lrs_raw else f"per_method.{m}: unknown method {m!r} (valid: {', '.join(valid)})")
    lrs = {m: _float_list(lrs_raw.get(m, base_cfg.train.lr), f"lrs.{m}") for m in methods}

    per_method_raw = raw.get("per_method") or {}
    if not isinstance(per_method_raw, dict):
        raise ConfigError(f"per_method: expected a mapping method -> RunConfig keys, got {per_method_raw!r}")
    per_method = {}
    for m, mapping in per_method_raw.items():
        if m not in methods:
            continue  # a preset configures methods a user may leave out with methods=[...]
        per_method[m] = _expand_dotted(mapping or {}, f"per_method.{m}")

    spec = {
        "name": str(raw.get("name") or "study"),
        "description": str(raw.get("description") or ""),
        "track": track,
        "methods": list(methods),
        "sizes": _normalise_sizes(raw.get("sizes"), track),
        "tokens": tokens,
        "tokens_per_param": ratio,
        "lrs": lrs,
        "seeds": seeds,
        "per_method": per_method,
        "base": base,
    }
    if raw.get("slurm") is not None:  # execution settings; validated here, used by beyondbp.slurm
        from .slurm import normalise_slurm
        spec["slurm"] = normalise_slurm(raw["slurm"])
    return spec


# --- plan ---------------------------------------------------------------------------------

@dataclass
class PlannedRun:
    name: str
    method: str
    size: str
    lr: float
    seed: int
    cfg: RunConfig
    n_params: int  # non-embedding parameters (Kaplan's N)
    cost: float  # exact BP training FLOPs, for scheduling and the ETA

    @property
    def tokens(self) -> int:
        return self.cfg.train.tokens


@dataclass
class StudyPlan:
    spec: dict
    runs: list[PlannedRun] = field(default_factory=list)


def planning_vocab_size(cfg: RunConfig) -> int:
    """The vocabulary a run will have, without tokenizing the corpus."""
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    if cfg.data.tokenizer == "byte":
        return 256
    if cfg.data.tokenizer == "gpt2":
        return 50_257
    from .data import _bpe_vocab_size
    return _bpe_vocab_size(cfg.data)


def model_counts(cfg: RunConfig) -> tuple[int, int]:
    """(non-embedding parameters, exact forward FLOPs per token) of cfg.model, built on no memory."""
    from .model import resolve_model_config
    model_cfg = copy.deepcopy(cfg.model)
    resolve_model_config(model_cfg, planning_vocab_size(cfg))
    return _counts_of(tuple(sorted(dataclasses.asdict(model_cfg).items())))


@functools.lru_cache(maxsize=None)
def _counts_of(model_items: tuple) -> tuple[int, int]:
    import torch
    from .model import build_model
    model_cfg = ModelConfig(**dict(model_items))
    with torch.device("meta"):
        model = build_model(model_cfg)
    return model.n_params_nonembedding(), model.forward_flops_per_token()


def run_name(method: str, size: str, lr: float, seed: int) -> str:
    return f"{method}_{size}_lr{lr:g}_s{seed}"


def plan_study(spec: dict) -> StudyPlan:
    """Every run of the grid as a validated RunConfig; raises ConfigError before any run starts."""
    from .train import learning_rate, make_plan
    plan = StudyPlan(spec)
    track = spec.get("track", "transformer")
    for method in spec["methods"]:
        for size, model_keys in spec["sizes"].items():
            for lr in spec["lrs"][method]:
                for seed in spec["seeds"]:
                    cfg = apply_mapping(_base_config(track), copy.deepcopy(spec["base"]), prefix="base.")
                    apply_mapping(cfg, {"model": model_keys}, prefix="sizes.")
                    apply_mapping(cfg, copy.deepcopy(spec["per_method"].get(method, {})),
                                  prefix=f"per_method.{method}.")
                    cfg.method.name, cfg.seed, cfg.train.lr = method, seed, lr
                    name = run_name(method, size, lr, seed)
                    if track == "mlp":
                        plan.runs.append(_plan_mlp_run(name, method, size, lr, seed, cfg))
                        continue
                    n_params, forward_flops = model_counts(cfg)
                    if spec["tokens"] is not None:
                        tokens = spec["tokens"]
                    else:
                        tokens = int(spec["tokens_per_param"] * n_params)
                    batch = cfg.train.batch_tokens
                    cfg.train.tokens = max(batch, tokens // batch * batch) if batch > 0 else tokens
                    make_plan(cfg)
                    learning_rate(cfg, 0, 1)
                    plan.runs.append(PlannedRun(name, method, size, lr, seed, cfg, n_params,
                                                3.0 * forward_flops * cfg.train.tokens))
    return plan


def _plan_mlp_run(name: str, method: str, size: str, lr: float, seed: int, cfg: RunConfig) -> PlannedRun:
    """An MLP run: its model shape from the dataset, its tokens = epochs x training examples."""
    from .mlp import resolve_mlp_config
    from .mlp_train import validate_train
    cfg.model.kind = "mlp"
    n_inputs, n_classes, n_train = _image_data_shape(json.dumps(dataclasses.asdict(cfg.data), sort_keys=True))
    resolve_mlp_config(cfg.model, n_inputs, n_classes)
    validate_train(cfg)
    n_params, forward_flops = _counts_of(tuple(sorted(dataclasses.asdict(cfg.model).items())))
    examples = cfg.train.epochs * n_train
    cfg.train.tokens = examples
    return PlannedRun(name, method, size, lr, seed, cfg, n_params, 3.0 * forward_flops * examples)


@functools.lru_cache(maxsize=None)
def _image_data_shape(data_key: str) -> tuple[int, int, int]:
    from .config import DataConfig
    from .mlp import load_image_data
    data = load_image_data(DataConfig(**json.loads(data_key)))
    return data.n_inputs, data.n_classes, len(data.train_x)


# --- study folder ---------------------------------------------------------------------------

def _comparable(spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    spec.pop("slurm", None)
    spec.setdefault("track", "transformer")  # study folders from before tracks existed
    for key in EXECUTION_KEYS:
        spec["base"]["train"].pop(key, None)
    return spec


def _first_difference(old, new, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            diff = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if diff:
                return diff
        return None
    return None if old == new else f"{path or 'spec'} ({old!r} there, {new!r} now)"


def prepare_study_dir(out: str | Path, spec: dict) -> Path:
    """Create DIR with spec.yaml, or check that DIR holds this very spec."""
    out = Path(out)
    spec_path = out / "spec.yaml"
    if spec_path.exists():
        old = yaml.safe_load(spec_path.read_text())
        diff = _first_difference(_comparable(old), _comparable(spec))
        if diff:
            raise ConfigError(f"--out: {out} holds a study with a different spec: {diff}; use another --out")
        return out
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {out} ({exc.strerror or exc})") from None
    tmp = spec_path.with_name("spec.yaml.tmp")
    tmp.write_text(yaml.safe_dump(spec, sort_keys=False))
    os.replace(tmp, spec_path)
    return out


def load_study(study_dir: str | Path) -> StudyPlan:
    path = Path(study_dir) / "spec.yaml"
    if not path.exists():
        raise ConfigError(f"DIR: {study_dir} is not a study folder (no spec.yaml)")
    return plan_study(normalise_spec(yaml.safe_load(path.read_text())))


def read_summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_locked(lock_path: Path) -> bool:
    """Whether a live process holds the run's lock (a dead or zombie one has released it)."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's own lock
    return False


def run_state(run_dir: Path) -> str:
    """completed | diverged | failed | running | interrupted | pending."""
    if _is_locked(run_dir / "worker.lock"):  # before the summary: a failed run may be retried
        return "running"
    summary = read_summary(run_dir)
    if summary and summary.get("status") in (*FINISHED, "failed"):
        return summary["status"]
    if (run_dir / "checkpoint.pt").exists() or (run_dir / "metrics.jsonl").exists():
        return "interrupted"
    return "pending"


# --- execution -------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child: get SIGKILL when the study process dies, so no run outlives its study."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_layout(plan: StudyPlan, workers: int | None) -> tuple[int, int, list[str] | None]:
    """(workers, threads per run, GPU ids per worker slot or None)."""
    cores = os.cpu_count() or 1
    device = plan.spec["base"]["train"]["device"]
    gpus = 0
    if device in ("auto", "cuda"):
        import torch
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if workers is None:
        workers = gpus if gpus else cores
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    workers = min(workers, max(1, len(plan.runs)))
    threads = plan.spec["base"]["train"]["threads"] or max(1, cores // workers)
    slots = [str(i % gpus) for i in range(workers)] if gpus else None
    return workers, threads, slots


def _launch(run: PlannedRun, run_dir: Path, threads: int, gpu: str | None) -> subprocess.Popen:
    cfg = copy.deepcopy(run.cfg)
    cfg.train.threads, cfg.train.progress = threads, "off"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    # the child inherits a locked descriptor: the run counts as running while it lives
    lock_fd = os.open(run_dir / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    log = open(run_dir / "train.log", "a")
    command = "mlp" if cfg.model.kind == "mlp" else "train"
    cmd = [sys.executable, "-m", "beyondbp", command, "--config", str(run_dir / "run.yaml"), "--out", str(run_dir)]
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                pass_fds=(lock_fd,),
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    finally:
        log.close()
        os.close(lock_fd)
    return proc


def _last_log_line(run_dir: Path) -> str:
    try:
        lines = [ln for ln in (run_dir / "train.log").read_text().splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


def _finish(run: PlannedRun, run_dir: Path, returncode: int) -> str:
    """Record a run's outcome; a crash becomes summary status `failed` with its error."""
    summary = read_summary(run_dir)
    if summary and summary.get("status") in FINISHED and returncode == 0:
        return summary["status"]
    if returncode == 130:
        return "interrupted"
    reason = _last_log_line(run_dir) or f"exit status {returncode}"
    if returncode < 0:
        reason = f"killed by signal {-returncode}: {reason}"
    failed = {"method": run.method, "seed": run.seed, "status": "failed", "error": reason, "returncode": returncode}
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(failed, indent=2) + "\n")
    os.replace(tmp, run_dir / "summary.json")
    return "failed"


class _Progress:
    """Runs done / running / left and an ETA weighted by each run's planned FLOPs."""

    def __init__(self, plan: StudyPlan, study_dir: Path, todo: list[PlannedRun], quiet: bool):
        from tqdm import tqdm
        self.study_dir, self.todo_cost = study_dir, sum(r.cost for r in todo) or 1.0
        self.n_total, self.n_done = len(plan.runs), len(plan.runs) - len(todo)
        self.start, self.finished_cost = time.monotonic(), 0.0
        self.state = ""
        self.bar = tqdm(total=self.n_total, initial=self.n_done, unit="run", dynamic_ncols=True,
                        disable=quiet or not sys.stderr.isatty(),
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs {postfix}")
        self.quiet = quiet

    def _partial(self, running: list[PlannedRun]) -> float:
        done = 0.0
        for run in running:
            path = self.study_dir / "runs" / run.name / "metrics.jsonl"
            try:
                last = path.read_text().strip().splitlines()[-1]
                done += run.cost * min(1.0, json.loads(last)["tokens"] / run.tokens)
            except (OSError, IndexError, ValueError, KeyError):
                pass
        return done

    def refresh(self, running: list[PlannedRun], n_left: int) -> None:
        done_cost = self.finished_cost + self._partial(running)
        elapsed = time.monotonic() - self.start
        eta = "?" if done_cost <= 0 else _fmt_seconds(elapsed * (self.todo_cost - done_cost) / done_cost)
        self.state = f"running {len(running)}, left {n_left}, ETA {eta}"
        self.bar.set_postfix_str(self.state)

    def finished(self, run: PlannedRun, status: str, running: list[PlannedRun], n_left: int) -> None:
        self.finished_cost += run.cost
        self.n_done += 1
        self.bar.update(1)
        self.refresh(running, n_left)
        if not self.quiet:
            summary = read_summary(self.study_dir / "runs" / run.name) or {}
            detail = (f"val loss {summary['final_val_loss']:.4f}" if summary.get("final_val_loss") is not None
                      else summary.get("error", ""))
            self.bar.write(f"[{self.n_done}/{self.n_total}] {run.name}: {status} {detail}".rstrip()
                           + f" ({_fmt_seconds(time.monotonic() - self.start)} elapsed; {self.state})", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def prepare_data(runs: list[PlannedRun]) -> None:
    """Tokenize and cache each corpus once, before the workers start: a bad corpus fails here
    with one line, and K workers do not tokenize the same corpus K times."""
    from .data import load_token_data
    seen = set()
    for run in runs:
        key = json.dumps(dataclasses.asdict(run.cfg.data), sort_keys=True)
        if key not in seen:
            seen.add(key)
            if run.cfg.model.kind == "mlp":
                _image_data_shape(key)
            else:
                load_token_data(run.cfg.data)


def run_study(plan: StudyPlan, study_dir: str | Path, workers: int | None = None, quiet: bool = False) -> dict:
    """Train every unfinished run of the plan; return {status: count}. Resumable and killable."""
    study_dir = prepare_study_dir(study_dir, plan.spec)
    n_workers, threads, gpus = worker_layout(plan, workers)
    runs_dir = study_dir / "runs"
    states = {r.name: run_state(runs_dir / r.name) for r in plan.runs}
    busy = [name for name, state in states.items() if state == "running"]
    if busy:
        raise ConfigError(f"--out: run {busy[0]} in {study_dir} is being trained by another process; "
                          f"wait for it or stop it first")
    todo = [r for r in plan.runs if states[r.name] not in FINISHED]
    prepare_data(todo)
    todo.sort(key=lambda r: -r.cost)  # longest first: the last runs to finish are short ones
    if not quiet:
        print(f"study {plan.spec['name']}: {len(plan.runs)} runs, {len(plan.runs) - len(todo)} already done; "
              f"{n_workers} workers x {threads} threads", file=sys.stderr)
    progress = _Progress(plan, study_dir, todo, quiet)
    running: dict[int, tuple[PlannedRun, subprocess.Popen]] = {}  # worker slot -> run
    queue = list(todo)

    def stop_children(signum, frame):
        for _, proc in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # train checkpoints, then exits
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGTERM, stop_children)
    try:
        while queue or running:
            for slot in range(n_workers):
                if slot not in running and queue:
                    run = queue.pop(0)
                    running[slot] = (run, _launch(run, runs_dir / run.name, threads, gpus[slot] if gpus else None))
            for slot, (run, proc) in list(running.items()):
                if proc.poll() is not None:
                    del running[slot]
                    status = _finish(run, runs_dir / run.name, proc.returncode)
                    progress.finished(run, status, [r for r, _ in running.values()], len(queue))
            progress.refresh([r for r, _ in running.values()], len(queue))
            time.sleep(0.2)
    except KeyboardInterrupt:
        for _, proc in running.values():
            try:
                proc.wait(timeout=60)  # Ctrl-C reaches the children too; let them checkpoint
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        progress.close()
    return study_counts(plan, study_dir)


def study_counts(plan: StudyPlan, study_dir: str | Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in plan.runs:
        state = run_state(Path(study_dir) / "runs" / run.name)
        counts[state] = counts.get(state, 0) + 1
    return counts
