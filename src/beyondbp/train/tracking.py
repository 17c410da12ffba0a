"""Live tracking: each evaluation row of metrics.jsonl also goes to TensorBoard or Weights & Biases.

`make_tracker(kind, ...)` with kind none | tensorboard | wandb (the `train.tracker` key). The
backends import their package only when chosen, so the default install needs neither
(`pip install "beyondbp[tensorboard]"` / `"beyondbp[wandb]"`). metrics.jsonl stays the record;
a tracker is a view of it, with the step as its axis.

A resumed run continues the same tracker run:
- TensorBoard: the writer opens with `purge_step=resume_step`, so the points a killed session
  wrote at or after the step the run resumes from are dropped (the resumed session measures
  those rows again): no duplicate points.
- W&B: the run id is kept in RUN/wandb/beyondbp_tracker.json and reused with resume="allow"
  (a run that starts over from step 0 gets a new id). W&B runs offline unless WANDB_MODE says
  otherwise: one RUN/wandb/offline-run-* folder per session, uploaded later with
  `wandb sync --id ID RUN/wandb/offline-run-*` (sessions in order of start time). After a hard
  kill (SIGKILL) the rows the killed session logged after its last checkpoint are in both folders,
  with the same values (the resumed run is bit-identical); a stop by SIGTERM/SIGINT leaves none twice.
"""
from __future__ import annotations

import importlib.util
import json
import math
import numbers
import os
import secrets
import string
from pathlib import Path

from ..atomic_write import atomic_write, make_folder
from ..config import CHOICES, ConfigError, RunConfig, check_choice, to_dict
from ..reads import read_text

TRACKERS = CHOICES["train.tracker"][0]
WANDB_STATE = "beyondbp_tracker.json"  # in RUN/wandb/: the W&B run id, reused on resume


def flatten_row(row: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics row by tag: nested dicts as `alignment/block0`; None, text, bools
    and the step itself (the axis) left out."""
    flat = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_row(value, f"{name}/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and name != "step":
            flat[name] = value
    return flat


def _new_run_id() -> str:
    """Eight lowercase letters and digits, as W&B's own ids."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _flatten_config(config: dict, prefix: str = "") -> dict:
    """`{"model": {"d_model": 64}}` -> `{"model.d_model": 64}`, for hyperparameter tables."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Tracker:
    """The no-op tracker (`train.tracker=none`, and every rank but the main one): writes nothing."""

    location = ""  # one line saying where the tracker writes; empty when it writes nothing

    def log_row(self, row: dict) -> None:
        """Send one evaluation row (a metrics.jsonl object with its `step`)."""

    def close(self) -> None:
        """Flush and finish; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorBoardTracker(Tracker):
    """Scalars in RUN/tensorboard/, one tag per metrics column; the config as text and hparams."""

    def __init__(self, run_dir: Path, run_name: str, group: str | None, config: dict, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without tensorboard
        from torch.utils.tensorboard.summary import hparams

        log_dir = make_folder(run_dir / "tensorboard", inside=run_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step)
        self.location = f"TensorBoard events in {log_dir}"
        if resume_step == 0:  # a resumed run wrote its config when it started
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)
            table = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
                     for key, value in _flatten_config(config).items()}
            table.update(run=run_name, group=group or "")
            # hparams() declares which scalar tags the HParams table shows; it reads their values from
            # the scalars logged under those tags, so the NaN given here is never displayed
            experiment, session_start, _ = hparams(table, {"val_loss": math.nan, "train_loss": math.nan})
            for summary in (experiment, session_start):
                self.writer.file_writer.add_summary(summary, 0)
        self.writer.flush()

    def log_row(self, row: dict) -> None:
        for tag, value in flatten_row(row).items():
            self.writer.add_scalar(tag, value, row["step"])
        self.writer.flush()  # evaluations are rare; a kill must not take the rows already in metrics.jsonl

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbTracker(Tracker):
    """A W&B run in RUN/wandb/, offline unless WANDB_MODE says otherwise; its id in RUN/wandb/beyondbp_tracker.json."""

    def __init__(self, run_dir: Path, run_name: str, group: str | None, config: dict, resume_step: int):
        import wandb  # raises ImportError without wandb

        folder = make_folder(run_dir / "wandb", inside=run_dir)
        state_path = folder / WANDB_STATE
        # a run that starts over (from step 0) is a new W&B run: W&B cannot take back logged steps
        run_id = _read_run_id(state_path) if resume_step > 0 else None
        run_id = run_id or _new_run_id()
        mode = os.environ.get("WANDB_MODE", "offline")
        # console off: W&B must not wrap the progress bar's stream
        settings = {"console": "off", "silent": True,
                    # rows reach the .wandb file within a second, not 15 s: a killed run keeps them
                    "x_transaction_log_flush_interval": 1.0}
        if mode == "offline":  # no system sampler, machine probe, git or code capture: nothing that could wait
            settings.update(x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                            disable_git=True, save_code=False)
        fields = getattr(wandb.Settings, "model_fields", {})  # versions differ in the settings they know
        settings = {key: value for key, value in settings.items() if key in fields}
        # finish a run left open in this process rather than log into it (older versions: True)
        reinit = "finish_previous" if "finish_previous" in str(getattr(fields.get("reinit"), "annotation", "")) else True
        self.run = wandb.init(
            dir=str(run_dir), id=run_id, resume="allow", name=run_name, group=group,
            project=os.environ.get("WANDB_PROJECT", "beyondbp"), config=config, mode=mode, reinit=reinit,
            settings=wandb.Settings(**settings))
        atomic_write(state_path, json.dumps({"id": run_id}) + "\n")
        where = {"offline": f"offline in {folder} (upload: wandb sync --id {run_id} {folder}/offline-run-*)"}
        self.location = f"W&B run {run_id}, " + where.get(mode, mode)

    def log_row(self, row: dict) -> None:
        self.run.log(flatten_row(row), step=int(row["step"]), commit=True)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _read_run_id(path: Path) -> str | None:
    """The W&B run id an earlier session of this run used, if its record is readable."""
    try:
        run_id = json.loads(read_text(path, "the W&B run record", "json")).get("id")
    except (OSError, ValueError, AttributeError):  # ConfigError (a link, a FIFO, too large) is a ValueError
        return None
    return run_id if isinstance(run_id, str) and run_id else None


_BACKENDS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}  # each needs the package of its name


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: a module blocked as None in sys.modules
        return False


def check_tracker(kind: str) -> None:
    """Refuse, before any run starts, an unknown `train.tracker` or one whose package is not
    installed (found without importing it)."""
    check_choice("train.tracker", kind, TRACKERS, "tracker")
    if kind != "none" and not _installed(kind):
        raise ConfigError(f"train.tracker={kind} needs the {kind} package, which is not installed: "
                          f'pip install "beyondbp[{kind}]"')


def make_tracker(kind: str, *, run_dir: str | Path, run_name: str, group: str | None = None,
                 config: dict | None = None, enabled: bool = True, resume_step: int = 0) -> Tracker:
    """The tracker `train.tracker=kind` asks for.

    run_dir: the run folder (the tracker writes under it); run_name: the run's name in the tracker;
    group: the study's name, so a study's runs can be compared together; config: the run's
    resolved config (a nested dict); enabled: False on every process but the main one;
    resume_step: the step this session starts from (the checkpoint's step, 0 for a fresh run) --
    the session logs every row from it on again, so what an earlier session logged there is dropped.
    A missing package is a ConfigError naming train.tracker and the extra to install."""
    check_tracker(kind)
    if kind == "none" or not enabled:
        return Tracker()
    try:
        return _BACKENDS[kind](Path(run_dir), run_name, group, config or {}, int(resume_step))
    except ImportError as err:
        raise ConfigError(f"train.tracker={kind} needs the {kind} package ({err}): "
                          f'pip install "beyondbp[{kind}]"') from None


def check_trackers(configs) -> None:
    """check_tracker for every run of a study, before any starts."""
    for kind in sorted({cfg.train.tracker for cfg in configs}):
        check_tracker(kind)


def join_study(cfg: RunConfig, study_dir: Path) -> None:
    """A study's run (in STUDY/runs/NAME, or a branched study's trunk in STUDY/trunks/NAME) logs
    in the group of its study: the study folder's name, unless the spec names one
    (base.train.tracker_group)."""
    cfg.train.tracker_group = cfg.train.tracker_group or Path(study_dir).resolve().name


def run_tracker(cfg: RunConfig, out: Path, resume_step: int = 0, enabled: bool = True) -> Tracker:
    """The tracker of the run `cfg` trains into `out`: named after its folder, in the group
    `train.tracker_group` (a study's folder name), with the resolved config."""
    return make_tracker(cfg.train.tracker, run_dir=out, run_name=Path(out).name, group=cfg.train.tracker_group,
                        config=to_dict(cfg), enabled=enabled, resume_step=resume_step)
